// The reference system's Energy Saver templates that both the tests and the benchmarks run
// (reference 1nce-coap-endpoint.md §5.6: T-feat, T-switch, T-full), kept in one place.
#pragma once

#include <string_view>

namespace coapgate::energysaver::reference {

constexpr std::string_view kTFeat =
    R"({"sense":[{"asset":"Temperature","value":{"byte":0,"bytelength":2,"type":"int","signed":true}},)"
    R"({"asset":"Humidity","value":{"byte":2,"bytelength":2,"type":"int"}},)"
    R"({"asset":"Switch","value":{"byte":4,"type":"boolean"}}]})";
constexpr std::string_view kTSwitch =
    R"({"sense":[{"switch":{"byte":0,"bytelength":1,"type":"int"},"on":[{"case":0,"comment":"Positional data","do":[)"
    R"({"asset":"gps.lat","value":{"byte":1,"bytelength":4,"byteorder":"big","type":"float"}},)"
    R"({"asset":"gps.lon","value":{"byte":5,"bytelength":4,"byteorder":"big","type":"float"}},)"
    R"({"asset":"speed","value":{"byte":9,"bytelength":2,"byteorder":"big","type":"int"}}]},)"
    R"({"default":true,"do":[{"asset":"error","value":"unknown payload"}]}]}]})";
constexpr std::string_view kTFull =
    R"({"sense":[{"asset":"message_code","value":{"byte":0,"bytelength":1,"type":"uint"}},)"
    R"({"switch":{"byte":0,"bytelength":1,"type":"int"},"on":[{"case":0,"do":[)"
    R"({"asset":"data_type","value":"Position"},)"
    R"({"asset":"gps.lat","value":{"byte":1,"bytelength":4,"type":"float"}},)"
    R"({"asset":"gps.lon","value":{"byte":4,"bytelength":4,"type":"float"}},)"
    R"({"asset":"speed","value":{"byte":8,"bytelength":2,"type":"int"}}]},)"
    R"({"case":1,"do":[{"asset":"data_type","value":"Maintenance"},)"
    R"({"asset":"on","value":{"byte":1,"type":"boolean"}},)"
    R"({"asset":"fuel","value":{"byte":2,"bytelength":4,"type":"uint"}},)"
    R"({"asset":"driver","value":{"byte":6,"bytelength":4,"type":"string"}},)"
    R"({"asset":"driver_hex","value":{"byte":6,"bytelength":4,"type":"hex"}}]},)"
    R"({"default":true,"do":[{"asset":"data_type","value":"Unsupported type"}]}]},)"
    R"({"asset":"full_payload","value":{"byte":0,"endbyte":0,"type":"hex"}}]})";

}  // namespace coapgate::energysaver::reference
