from think2seg.cli import main

raise SystemExit(main())
