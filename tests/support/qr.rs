//! Reading back the QR code slotd draws as inline SVG (src/api/confirmation.rs `qr_svg`).

/// The QR code of a confirmation letter, decoded: the first `<svg>` of `html` (a whole page or
/// the SVG alone), its path read back into modules, drawn as a bitmap and decoded with rqrr.
pub fn scan(html: &str) -> String {
    let start = html.find("<svg").expect("an svg");
    let svg = &html[start..];
    let size: usize = svg
        .split("viewBox=\"0 0 ")
        .nth(1)
        .and_then(|v| v.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("viewBox");
    let d = svg
        .split(" d=\"")
        .nth(1)
        .and_then(|d| d.split('"').next())
        .expect("path");
    let mut dark = vec![false; size * size];
    for square in d.split('M').filter(|s| !s.is_empty()) {
        let xy = square.strip_suffix("h1v1h-1z").expect("unit square");
        let (x, y) = xy.split_once(',').expect("x,y");
        let (x, y): (usize, usize) = (x.parse().expect("x"), y.parse().expect("y"));
        dark[y * size + x] = true;
    }
    let scale = 6;
    let mut image =
        rqrr::PreparedImage::prepare_from_greyscale(size * scale, size * scale, |x, y| {
            if dark[(y / scale) * size + x / scale] {
                0
            } else {
                255
            }
        });
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code");
    grids[0].decode().expect("QR decodes").1
}
