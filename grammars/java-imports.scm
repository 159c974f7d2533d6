; The package of a Java file and its imports.
(package_declaration [(scoped_identifier) (identifier)] @package)
(import_declaration [(scoped_identifier) (identifier)] @import)
(import_declaration [(scoped_identifier) (identifier)] @import (asterisk) @wildcard)
