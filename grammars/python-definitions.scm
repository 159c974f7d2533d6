; Top-level definitions of a Python module: classes, functions, module variables.
(module
  (class_definition name: (identifier) @name) @definition.class)
(module
  (decorated_definition
    definition: (class_definition name: (identifier) @name)) @definition.class)
(module
  (function_definition name: (identifier) @name) @definition.function)
(module
  (decorated_definition
    definition: (function_definition name: (identifier) @name)) @definition.function)
(module
  (expression_statement
    (assignment left: (identifier) @name)) @definition.variable)
