; Block comments and text blocks: their inner lines are text, not code to complete.
(block_comment) @literal
