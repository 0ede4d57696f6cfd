//! `WeightStore`: mmap'd safetensors with diffusers names, LDM key mapping and variant detection.
