from bidsanon.cli import main

raise SystemExit(main())
