"""placeholder"""
def write_goldens(fixtures_dir, goldens_dir):
    raise NotImplementedError
