//! Diffusion schedulers (PNDM, DDIM, Euler, DPM++ and more) matching diffusers step for step (issue 5: not yet implemented).
