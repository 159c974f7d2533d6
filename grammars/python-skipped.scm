; Lines that are not code to complete: strings spanning lines (docstrings included) and
; import statements (a parenthesised import spans lines).
(string) @skipped
(import_statement) @skipped
(import_from_statement) @skipped
(future_import_statement) @skipped
