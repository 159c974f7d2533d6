; Imports of a Python module, one match per imported name.
; import a.b
(import_statement
  name: (dotted_name) @module)
; import a.b as c
(import_statement
  name: (aliased_import
    name: (dotted_name) @module
    alias: (identifier) @alias))
; from m import x / from .m import x
(import_from_statement
  module_name: (_) @from
  name: (dotted_name) @name)
; from m import x as y
(import_from_statement
  module_name: (_) @from
  name: (aliased_import
    name: (dotted_name) @name
    alias: (identifier) @alias))
; from m import *
(import_from_statement
  module_name: (_) @from
  (wildcard_import) @wildcard)
