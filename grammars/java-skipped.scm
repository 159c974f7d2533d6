; Lines that are not code to complete: block comments and imports.
(block_comment) @skipped
(import_declaration) @skipped
(package_declaration) @skipped
