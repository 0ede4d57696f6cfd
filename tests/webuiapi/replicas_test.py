"""Eight concurrent webuiapi txt2img requests through the load balancer at SD_PORT (run by
tests/server_replicas.rs, which starts two `sd serve` replicas behind nginx). Each must answer
with its image and its own seed."""

import os
import threading

import webuiapi

PORT = int(os.environ["SD_PORT"])
results = {}


def one(seed):
    api = webuiapi.WebUIApi(host="127.0.0.1", port=PORT)
    results[seed] = api.txt2img(prompt="a fox", seed=seed, steps=2, width=64, height=64)


threads = [threading.Thread(target=one, args=(seed,)) for seed in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(timeout=300)
assert sorted(results) == list(range(8)), sorted(results)
for seed, result in results.items():
    assert len(result.images) == 1 and result.info["seed"] == seed, result.info
print("replicas: 8 requests through the balancer answered")
