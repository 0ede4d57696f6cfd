//! Opening the backend where there is no usable device gives a typed error, never a panic.
//! Runs everywhere; on a machine without the NVIDIA driver (CI) it checks the exact error.

use sd_core::{DType, Error};
use sd_cuda::CudaBackend;

#[test]
fn no_cuda_device_gives_a_typed_error_not_a_panic() {
    // No machine has 4097 GPUs: with a driver the ordinal check refuses it, without one the
    // library check does.
    let err = CudaBackend::new(4096).expect_err("device 4096 cannot exist");
    assert!(
        matches!(err, Error::NoCudaDevice { .. }),
        "expected NoCudaDevice, got {err:?}"
    );

    if !sd_cuda::driver_present() {
        let err = CudaBackend::new(0).expect_err("no driver, no device");
        let Error::NoCudaDevice { reason } = &err else {
            panic!("expected NoCudaDevice, got {err:?}");
        };
        assert!(reason.contains("libcuda"), "{reason}");
        assert!(err.to_string().starts_with("no CUDA device"), "{err}");
        assert_eq!(CudaBackend::device_count(), 0);
        assert_eq!(sd_cuda::device_count(), 0);
    }
}

#[test]
fn bf16_storage_is_refused_before_touching_the_device() {
    let err = CudaBackend::with_dtype(0, DType::BF16).expect_err("BF16 is not a storage mode");
    assert!(
        matches!(&err, Error::InvalidArgument { name, .. } if name == "dtype"),
        "{err:?}"
    );
}
