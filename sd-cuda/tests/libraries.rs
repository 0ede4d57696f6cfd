//! Where this machine's CUDA libraries are found (or every place looked), printed for the
//! record: tools/gpu_check.sh shows this first on the device.

#[test]
fn the_library_search_reports_each_library() {
    let report = sd_cuda::libraries::report();
    println!(
        "CUDA {} libraries:\n{report}",
        sd_cuda::libraries::CUDA_MAJOR
    );
    for library in ["libcuda", "libnvrtc", "libcublas"] {
        assert!(
            report.contains(library),
            "{library} missing from:\n{report}"
        );
    }
}
