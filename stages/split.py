"""DVC stage: split the rendered images 80:5:15 into train/val/test by source photo, seeded."""
from caisp.pipeline.split import run_split
from stages._entry import main

if __name__ == "__main__":
    main(run_split)
