"""DVC stage: render every raw with LibRaw to an 8-bit sRGB target and store its normalised Bayer mosaic."""
from caisp.pipeline.render import run_render
from stages._entry import main

if __name__ == "__main__":
    main(run_render)
