// Debian's libhttp-parser-dev (nodejs http-parser 2.9.4) ships no pkg-config file.
#include <http_parser.h>
