"""``python -m fedlab_kit.maps [DIR]``: fetch the pinned web assets for offline snapshots."""

from fedlab_kit.maps.assets import main

raise SystemExit(main())
