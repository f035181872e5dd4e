// coapgate's command line (SPEC §10). Until the ingest engine lands, the only command is
// `dissect`, which shows what the codec makes of a datagram and what coapgate would answer.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "engine/dissect.h"

namespace {

int RunDissect(const std::vector<std::string>& hex_datagrams, size_t max_payload) {
  coapgate::codec::TriageLimits limits;
  limits.max_payload = max_payload;
  int status = 0;
  auto one = [&](const std::string& hex) {
    auto bytes = coapgate::engine::ParseHex(hex);
    if (!bytes) {
      std::cerr << "coapgate dissect: " << bytes.error() << "\n";
      status = 2;
      return;
    }
    std::cout << coapgate::engine::Dissect(*bytes, limits) << "\n";
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"coapgate: high-throughput CoAP ingestion engine"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(COAPGATE_VERSION));

  std::vector<std::string> hex_datagrams;
  size_t max_payload = 1024;
  CLI::App* dissect = app.add_subcommand(
      "dissect", "Parse CoAP datagrams given in hex (arguments, or one per stdin line) and show "
                 "the verdict and reply");
  dissect->add_option("datagram", hex_datagrams, "datagram bytes in hex, e.g. '40 02 12 34'");
  dissect->add_option("--max-payload", max_payload, "largest accepted payload (coap.max_payload)")
      ->check(CLI::Range(size_t{0}, size_t{65507}));

  CLI11_PARSE(app, argc, argv);
  if (dissect->parsed()) return RunDissect(hex_datagrams, max_payload);
  return 2;
}
