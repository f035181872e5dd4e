// coapgate's command line (docs/cli.md):
//   coapgate [--config FILE] [--log-level L]  run (embedded defaults without a file)
//   coapgate --take-over [--config FILE]      take the running coapgate's sockets over
//   coapgate upgrade [--config FILE]          have the running coapgate replaced by its file's version
//   coapgate --check-config [--config FILE]   validate config and devices, exit 0, 2 or 1
//   coapgate dissect [HEX...]                 show what the codec makes of datagrams
//   coapgate translate --template F (--hex H | --base64 B)   the Energy Saver tester
//   coapgate devices import FILE [--replace] | export          the PostgreSQL registry
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string_view>
#include <iostream>
#include <string>
#include <vector>

#include "config/config.h"
#include "app/devices_command.h"
#include "app/upgrade_command.h"
#include "app/dissect.h"
#include "app/log_setup.h"
#include "common/base64.h"
#include "common/error.h"
#include "common/hex.h"
#include "energy_saver/translator.h"
#include "engine/server.h"
#include "sinks/template_set.h"

namespace {

// A bad config, devices file, template or command line exits 2 with the key or line named;
// the environment's refusals (sockets, files, permissions) exit 1: coapgate::ExitCode.
constexpr int kExitConfig = coapgate::ExitCode(coapgate::ErrorKind::kBadInput);

int RunDissect(const std::vector<std::string>& hex_datagrams, size_t max_payload) {
  coapgate::codec::TriageLimits limits;
  limits.max_payload = max_payload;
  int status = 0;
  auto one = [&](const std::string& hex) {
    auto bytes = coapgate::ParseHex(hex);
    if (!bytes) {
      std::cerr << "coapgate dissect: " << bytes.error() << "\n";
      status = kExitConfig;
      return;
    }
    std::cout << coapgate::app::Dissect(*bytes, limits) << "\n";
  };
  if (hex_datagrams.empty()) {
    for (std::string line; std::getline(std::cin, line);) {
      if (!line.empty() && line[0] != '#') one(line);
    }
  } else {
    for (const std::string& hex : hex_datagrams) one(hex);
  }
  return status;
}

// The configuration in force: the file's, or the embedded defaults.
coapgate::Result<coapgate::config::Config, coapgate::Error> LoadConfig(const std::string& path) {
  return path.empty() ? coapgate::config::ParseConfig("", "(embedded defaults)")
                      : coapgate::config::LoadConfigFile(path);
}

// `coapgate translate`: the reference system's template tester (docs/energy-saver.md). Exit 0 with the
// JSON, 1 with the translation error (the text the ERROR event would carry), 2 for a bad
// template or input.
int RunTranslate(const std::string& template_path, const std::string& hex,
                 const std::string& base64) {
  auto program = coapgate::sinks::LoadTemplateFile(template_path);
  if (!program) {
    // 2 whatever the kind: here 1 means "the translation failed" (docs/energy-saver.md).
    std::cerr << program.error().message << "\n";
    return kExitConfig;
  }
  auto payload = hex.empty() ? coapgate::ParseBase64(base64)
                             : coapgate::ParseHex(hex);
  if (!payload) {
    std::cerr << "coapgate translate: " << (hex.empty() ? "--base64: " : "--hex: ")
              << payload.error() << "\n";
    return kExitConfig;
  }
  coapgate::energysaver::Translator translator(*program);
  std::string out((*program)->MaxOutputSize(payload->size()), '\0');
  auto json = translator.Translate(*payload, std::span(out.data(), out.size()));
  if (!json) {
    std::array<char, 512> error;
    const size_t n = coapgate::energysaver::FormatError(json.error(), error);
    std::cout << std::string_view(error.data(), n) << "\n";
    return 1;
  }
  std::cout << std::string_view(out.data(), *json) << "\n";
  return 0;
}

// Whether the directory that will hold the bootstrap state file (devices.state) lets coapgate
// create it: access(W_OK|X_OK) on that directory. The state file itself is created at start, so
// its absence is fine; a directory that is missing or read-only would only fail at start.
std::optional<std::string> CheckStateDirectory(const std::string& state) {
  const size_t slash = state.rfind('/');
  const std::string directory =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : state.substr(0, slash));
  if (::access(directory.c_str(), W_OK | X_OK) != 0) {
    return "directory " + directory + " is not writable: " + std::strerror(errno);
  }
  return std::nullopt;
}

// Exits 2 for what the operator wrote wrong (config, devices, templates, sinks) and 1 when
// the environment would stop the server: the bootstrap state directory is missing or not
// writable. A missing devices file is a warning (the server starts with an empty registry).
int CheckConfig(const std::string& path) {
  const std::string name = path.empty() ? "(embedded defaults)" : path;
  auto config = LoadConfig(path);
  if (!config) {
    std::cerr << config.error().message << "\n";
    return kExitConfig;
  }
  if (auto templates = coapgate::engine::LoadTemplates(*config); !templates) {
    std::cerr << coapgate::engine::InConfig(
                     *config, coapgate::engine::TemplateKey(*config, templates.error().message),
                     templates.error().message)
              << "\n";
    return kExitConfig;
  }
  auto source = coapgate::engine::MakeDeviceSource(*config);
  auto devices = source->Load();
  if (!devices) {
    std::cerr << coapgate::engine::InConfig(*config, coapgate::engine::DeviceSourceKey(*config),
                                            devices.error().message)
              << "\n";
    return kExitConfig;
  }
  // Sets every sink up as the server would (TLS files, librdkafka properties, output files)
  // without connecting anywhere.
  if (auto sinks = coapgate::sinks::PublisherPool::Create(
          config->sinks, coapgate::sinks::PublisherPool::Mode::kCheckOnly);
      !sinks) {
    std::cerr << coapgate::engine::InConfig(*config, "", sinks.error()) << "\n";
    return kExitConfig;
  }
  // With backend = "postgres" the bootstrap state is in the database: no state file is made.
  if (auto problem = config->devices.backend == coapgate::config::DeviceBackend::kPostgres
                         ? std::nullopt
                         : CheckStateDirectory(config->devices.state)) {
    std::cerr << coapgate::engine::InConfig(*config, "devices.state", *problem) << "\n";
    return coapgate::ExitCode(coapgate::ErrorKind::kEnvironment);
  }
  if (devices->missing) {
    std::cerr << "warning: " << name << ": devices.file: " << config->devices.file
              << " does not exist; the server would start with no devices\n";
  }
  std::cout << name << ": ok; " << config->devices.file
            << ": " << (devices->missing ? "missing (every device would get 4.01)"
                                         : std::to_string(devices->devices->size()) + " devices")
            << "\n";
  return 0;
}

// `log_level`: --log-level, which wins over [log] level; empty: the file's.
int Serve(const std::string& path, const std::string& log_level, bool take_over) {
  auto config = LoadConfig(path);
  if (!config) {
    spdlog::error("{}", config.error().message);
    return coapgate::ExitCode(config.error().kind);
  }
  coapgate::config::LogLevel level = config->log.level;
  if (!log_level.empty()) level = *coapgate::config::ParseLogLevel(log_level);  // CLI-checked
  coapgate::app::SetUpLogging(level, config->log.format);
  coapgate::engine::BlockServerSignals();
  auto server = coapgate::engine::Server::Create(*config, take_over);
  if (!server) {
    spdlog::error("{}", server.error().message);
    return coapgate::ExitCode(server.error().kind);
  }
  return (*server)->Run();
}

}  // namespace

int main(int argc, char** argv) {
  // Until the configuration is read (its errors are logged too): info, text.
  coapgate::app::SetUpLogging(coapgate::config::LogLevel::kInfo,
                              coapgate::config::LogFormat::kText);

  CLI::App app{"coapgate: high-throughput CoAP ingestion engine"};
  app.set_version_flag("--version", std::string(COAPGATE_VERSION));
  std::string config_path;
  bool check_only = false;
  app.add_option("--config", config_path, "TOML configuration file (default: embedded defaults)")
      ->check(CLI::ExistingFile);
  app.add_flag("--check-config", check_only, "validate the configuration and devices, then exit");
  bool take_over = false;
  app.add_flag("--take-over", take_over,
               "take the listening sockets over from the coapgate running with this "
               "configuration, which then finishes its pending messages and exits");
  std::string log_level;
  app.add_option("--log-level", log_level,
                 "debug, info, warn or error: overrides [log] level of the configuration")
      ->check([](const std::string& text) {
        auto level = coapgate::config::ParseLogLevel(text);
        return level ? std::string() : level.error();
      });

  std::vector<std::string> hex_datagrams;
  size_t max_payload = 1024;
  CLI::App* dissect = app.add_subcommand(
      "dissect", "Parse CoAP datagrams given in hex (arguments, or one per stdin line) and show "
                 "the verdict and reply");
  dissect->add_option("datagram", hex_datagrams, "datagram bytes in hex, e.g. '40 02 12 34'");
  dissect->add_option("--max-payload", max_payload, "largest accepted payload (coap.max_payload)")
      ->check(CLI::Range(size_t{0}, size_t{65507}));

  std::string template_path;
  std::string payload_hex;
  std::string payload_base64;
  CLI::App* translate = app.add_subcommand(
      "translate", "Translate a binary payload with an Energy Saver template and print the JSON");
  translate->add_option("--template", template_path, "template JSON file")
      ->required()
      ->check(CLI::ExistingFile);
  auto* hex_option = translate->add_option("--hex", payload_hex, "payload bytes in hex");
  auto* base64_option = translate->add_option("--base64", payload_base64, "payload in base64");
  hex_option->excludes(base64_option);
  translate->callback([&] {
    if (hex_option->count() + base64_option->count() != 1) {
      throw CLI::ValidationError("give the payload with exactly one of --hex or --base64");
    }
  });

  CLI::App* devices = app.add_subcommand(
      "devices", "Import into or export from the PostgreSQL registry (devices.backend = postgres)");
  devices->require_subcommand(1);
  std::string import_file;
  bool import_replace = false;
  bool import_force = false;
  CLI::App* import = devices->add_subcommand(
      "import", "Validate a devices CSV and write it into the registry in one transaction");
  import->add_option("file", import_file, "devices CSV (the format of devices.file)")
      ->required()
      ->check(CLI::ExistingFile);
  import->add_flag("--replace", import_replace,
                   "also remove the devices the file does not list (default: add and update)");
  import->add_flag("--force", import_force,
                   "with --replace: remove them even beyond devices.reload_max_removed_percent");
  CLI::App* export_devices =
      devices->add_subcommand("export", "Write the registry's devices as a devices CSV to stdout");
  CLI::App* upgrade = app.add_subcommand(
      "upgrade", "Replace the running coapgate (this configuration's) by a new process of the "
                 "same executable file, handing its sockets over without a gap");
  upgrade->fallthrough();
  for (CLI::App* sub : {devices, import, export_devices}) {
    sub->fallthrough();  // --config may come after the subcommand too
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Usage errors exit 2 like configuration errors (CLI11 reports 105/106 by default).
    const int code = app.exit(e);
    return code == 0 ? 0 : kExitConfig;
  }
  if (dissect->parsed()) return RunDissect(hex_datagrams, max_payload);
  if (translate->parsed()) return RunTranslate(template_path, payload_hex, payload_base64);
  if (devices->parsed()) {
    auto config = LoadConfig(config_path);
    if (!config) {
      std::cerr << config.error().message << "\n";
      return coapgate::ExitCode(config.error().kind);
    }
    const std::string name = config_path.empty() ? "(embedded defaults)" : config_path;
    return import->parsed()
               ? coapgate::app::ImportDevices(*config, name, import_file, import_replace,
                                              import_force)
               : coapgate::app::ExportDevices(*config, name);
  }
  if (upgrade->parsed()) {
    auto config = LoadConfig(config_path);
    if (!config) {
      std::cerr << config.error().message << "\n";
      return coapgate::ExitCode(config.error().kind);
    }
    return coapgate::app::Upgrade(*config);
  }
  if (check_only) return CheckConfig(config_path);
  return Serve(config_path, log_level, take_over);
}
