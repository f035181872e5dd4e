// `coapgate devices import FILE [--replace]` and `coapgate devices export`: the operator's way
// into and out of the shared PostgreSQL registry (devices.backend = "postgres", docs/cluster.md).
// Import validates the file with the loader the server uses (same messages, exit 2), then
// writes it in one transaction (exit 1 when the database refuses or is away); every node picks
// the change up within a second. Export writes the live devices as a devices CSV to stdout.
#pragma once

#include <string>

#include "config/config.h"

namespace coapgate::app {

// Returns the process exit code; messages go to stderr, the summary to stdout.
[[nodiscard]] int ImportDevices(const config::Config& config, const std::string& config_name,
                                const std::string& file, bool replace, bool force = false);
[[nodiscard]] int ExportDevices(const config::Config& config, const std::string& config_name);

}  // namespace coapgate::app
