//! A1111's inpainting mask blur (`mask_blur`, `mask_blur_x/y`) gives OpenCV's bytes exactly:
//! goldens by `cv2.GaussianBlur` in `tools/fixturegen/mask_blur.py` (`make_fixtures.py --only
//! mask_blur`), on a mask with edges both ways, thin lines, grey levels, and a kernel taller
//! than the mask.
#![allow(clippy::unwrap_used)] // tests unwrap what they built themselves

mod support;

use stable_diffusion::image_file::read_gray;

#[test]
fn mask_blur_matches_opencv_byte_for_byte() {
    let dir = support::goldens().join("mask_blur");
    let mask = read_gray(dir.join("mask.png")).unwrap();
    for (x, y) in [(4, 4), (1, 3), (8, 0), (0, 2), (8, 8)] {
        let expected = read_gray(dir.join(format!("blur_{x}_{y}.png"))).unwrap();
        let ours = mask.gaussian_blur(x, y);
        let differing = ours
            .pixels()
            .iter()
            .zip(expected.pixels())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(differing, 0, "mask_blur_x {x}, mask_blur_y {y}");
    }
}
