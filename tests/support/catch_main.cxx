// Used only when the Catch2 package has no Catch2WithMain target (older v2 installs).
#define CATCH_CONFIG_MAIN
#include "kvq_test.hpp"
