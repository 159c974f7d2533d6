from aligncoder_lsp.cli import main

raise SystemExit(main())
