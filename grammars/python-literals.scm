; Strings (docstrings included): their inner lines are text, not code to complete.
(string) @literal
