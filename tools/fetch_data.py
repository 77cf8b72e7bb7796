"""Fetch the full emoji data set (npm tarballs) into a manual dir.

The same as `simmim-tf data fetch`, for a checkout without the console script:

    python tools/fetch_data.py --manual-dir ~/emoji_npm [--artists twitter google noto_v1]

Then `simmim-tf demo --manual-dir ~/emoji_npm` trains on all of it.
"""

import sys

from simmim_tf.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "fetch", *sys.argv[1:]]))
