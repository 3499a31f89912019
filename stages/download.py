"""DVC stage: download or synthesise the raw files of data.source into data/raw."""
from caisp.pipeline.download import run_download
from stages._entry import main

if __name__ == "__main__":
    main(run_download)
