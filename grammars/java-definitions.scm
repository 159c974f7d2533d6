; Top-level types of a Java file.
(program (class_declaration name: (identifier) @name) @definition.class)
(program (interface_declaration name: (identifier) @name) @definition.interface)
(program (enum_declaration name: (identifier) @name) @definition.enum)
(program (record_declaration name: (identifier) @name) @definition.record)
