"""DVC stage: Split the rendered images 80:5:15 into train/val/test, seeded."""
from caisp.pipeline import run_split
from stages._entry import main

if __name__ == "__main__":
    main(run_split)
