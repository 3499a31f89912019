"""The synthetic camera's sensors: real cameras' colour matrices (a table of their own, so that
validating `data.synthetic.cameras` does not make every stage depend on the synthesiser's code)."""

# XYZ->camera matrices under D65 of real cameras (dcraw's adobe_coeff table, from Adobe's DNG
# converter), x 1/10000. The Nikon D700 is FiveK's camera. The Canon 550D of ../shared/raw-samples is
# deliberately absent: it is kept for testing `caisp develop` on a camera the ISP never saw.
CAMERAS: dict[str, tuple[int, ...]] = {
    "Nikon D700": (8139, -2171, -663, -8747, 16541, 2295, -1925, 2008, 8093),
    "Nikon D90": (7309, -1403, -519, -8474, 16008, 2622, -2434, 2826, 8064),
    "Canon EOS 5D Mark II": (4716, 603, -830, -7798, 15474, 2480, -1496, 1937, 6651),
    "Canon EOS 40D": (6071, -747, -856, -7653, 15365, 2441, -2025, 2553, 7315),
    "Sony NEX-5N": (5991, -1456, -455, -4764, 12135, 2980, -707, 1425, 6701),
    "Olympus E-M5": (8380, -2630, -639, -2887, 10725, 2496, -627, 1427, 5438),
    "Pentax K-5": (8713, -2833, -743, -4342, 11900, 2772, -722, 1543, 6247),
}
