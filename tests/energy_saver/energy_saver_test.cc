// Energy Saver: the reference test vectors (1nce-coap-endpoint.md §5.6, byte-exact, key order
// included), the compiler's validation errors, value formatting, switch matching, path
// conflicts, output-buffer bounds, a random templates × payloads spin test against an
// independent nlohmann-based oracle, and the zero-allocation contract of Translate.
//
// This binary links tests/support/allocation_counter.cc (it replaces operator new).
#include <gtest/gtest.h>

#include <array>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "energy_saver/template_program.h"
#include "energy_saver/translator.h"
#include "tests/energy_saver/energy_saver_templates.h"
#include "tests/support/allocation_counter.h"

namespace coapgate::energysaver {
namespace {

using reference::kTFeat;
using reference::kTFull;
using reference::kTSwitch;

// ---- The reference templates (templates/*.json, compacted) ------------------------------

constexpr std::string_view kTAlarm =
    R"({"sense":[{"asset":"motion","value":{"byte":0,"bytelength":1,"type":"boolean"}}]})";
constexpr std::string_view kTLon =
    R"({"sense":[{"asset":"longitude","value":{"byte":0,"bytelength":4,"byteorder":"big","type":"float"}}]})";
constexpr std::string_view kTNested =
    R"({"sense":[{"asset":"simple_key","value":"value1"},{"asset":"level1.level2.level3.level4","value":"value2"}]})";
constexpr std::string_view kTTemperature200 =
    R"({"sense":[{"asset":"Temperature","value":{"byte":200,"bytelength":1,"type":"int"}}]})";
constexpr std::string_view kTLoc =
    R"({"sense":[{"asset":"longitude","custom_type":"location_long","value":{"byte":0,"bytelength":8,"type":"float","byteorder":"little"}},)"
    R"({"asset":"latitude","custom_type":"location_lat","value":{"byte":8,"bytelength":8,"type":"float","byteorder":"little"}}]})";
constexpr std::string_view kTBp =
    R"({"sense":[{"switch":{"byte":0,"bytelength":1,"type":"int"},"on":[{"case":1,"comment":"Energy_saver","do":[)"
    R"({"asset":"data_type","value":"Energy_Saver"},)"
    R"({"asset":"battery_level","value":{"byte":1,"bytelength":1,"type":"uint","byteorder":"little"}},)"
    R"({"asset":"signal_strength","value":{"byte":2,"bytelength":1,"type":"uint","byteorder":"little"}},)"
    R"({"asset":"software_version","value":{"byte":3,"bytelength":5,"type":"string","byteorder":"little"}}]}]}]})";
constexpr std::string_view kTEndbyte =
    R"({"sense":[{"asset":"v","value":{"endbyte":-4,"bytelength":4,"type":"uint"}}]})";
constexpr std::string_view kTDeep =
    R"({"sense":[{"asset":"car.running","value":{"byte":0,"type":"boolean"}},)"
    R"({"asset":"car.fuel","value":{"byte":1,"bytelength":4,"type":"uint"}},)"
    R"({"asset":"car.driver","value":{"byte":5,"bytelength":4,"type":"string"}}]})";

// ---- Helpers -----------------------------------------------------------------------------

std::vector<std::byte> Bytes(std::initializer_list<int> v) {
  std::vector<std::byte> out;
  for (int b : v) out.push_back(static_cast<std::byte>(b));
  return out;
}

std::shared_ptr<const Program> MustCompile(std::string_view t) {
  auto p = CompileTemplate(t);
  EXPECT_TRUE(p.has_value()) << (p ? "" : p.error()) << "\n  template: " << t;
  return p ? *p : nullptr;
}

// The JSON text, or "ERROR: <FormatError text>"; "COMPILE: <error>" if the template fails.
std::string Translate(std::string_view t, const std::vector<std::byte>& payload) {
  auto p = CompileTemplate(t);
  if (!p) return "COMPILE: " + p.error();
  Translator tr(*p);
  std::array<char, 4096> out;
  auto r = tr.Translate(payload, out);
  if (!r) {
    std::array<char, 512> e;
    return "ERROR: " + std::string(e.data(), FormatError(r.error(), e));
  }
  return std::string(out.data(), *r);
}

std::string CompileError(std::string_view t) {
  auto p = CompileTemplate(t);
  return p ? std::string("compiled") : p.error();
}

// One mapping "x" of the given selector JSON.
std::string One(std::string_view selector) {
  return R"({"sense":[{"asset":"x","value":)" + std::string(selector) + "}]}";
}

// ---- Reference vectors (§5.6) ------------------------------------------------------------

TEST(EnergySaverVectors, Tv1TemperatureHumiditySwitch) {
  EXPECT_EQ(Translate(kTFeat, Bytes({0x00, 0x1A, 0x00, 0x37, 0x00})),
            R"({"Temperature":26,"Humidity":55,"Switch":false})");
}
TEST(EnergySaverVectors, Tv2Motion) {
  EXPECT_EQ(Translate(kTAlarm, Bytes({0x01})), R"({"motion":true})");
}
TEST(EnergySaverVectors, Tv3LongitudeFloat32) {
  EXPECT_EQ(Translate(kTLon, Bytes({0x42, 0x4b, 0xbc, 0xf9})), R"({"longitude":50.934544})");
}
TEST(EnergySaverVectors, Tv4PositionalSwitch) {
  EXPECT_EQ(Translate(kTSwitch, Bytes({0x00, 0x42, 0x4b, 0xbc, 0xf9, 0x40, 0xde, 0x98, 0x1c, 0x00, 0x78})),
            R"({"gps":{"lat":50.934544,"lon":6.956068},"speed":120})");
}
TEST(EnergySaverVectors, Tv5SwitchDefault) {
  EXPECT_EQ(Translate(kTSwitch, Bytes({0x01, 0xff, 0xff, 0xff})), R"({"error":"unknown payload"})");
}
TEST(EnergySaverVectors, Tv6FullExampleKeyOrder) {
  EXPECT_EQ(Translate(kTFull, Bytes({0x01, 0x01, 0x00, 0x00, 0x05, 0x8c, 0x6f, 0x6c, 0x65, 0x67})),
            R"({"message_code":1,"data_type":"Maintenance","on":true,"fuel":1420,"driver":"oleg",)"
            R"("driver_hex":"6f6c6567","full_payload":"01010000058c6f6c6567"})");
}
TEST(EnergySaverVectors, Tv7ConstantsNestedAnyPayload) {
  const std::string expected =
      R"({"simple_key":"value1","level1":{"level2":{"level3":{"level4":"value2"}}}})";
  EXPECT_EQ(Translate(kTNested, {}), expected);
  EXPECT_EQ(Translate(kTNested, Bytes({1, 2, 3})), expected);
}
TEST(EnergySaverVectors, Tv8ExtractError) {
  EXPECT_EQ(Translate(kTTemperature200, Bytes({0x00, 0x01})),
            "ERROR: Asset path:Temperature, Error: can't extract [200:201] from 2 bytes");
}
TEST(EnergySaverVectors, Tv9LocationExtractError) {
  EXPECT_EQ(Translate(kTLoc, Bytes({0x01})),
            "ERROR: Asset path:longitude, Error: can't extract [0:8] from 1 bytes");
}
TEST(EnergySaverVectors, Tv10Blueprint) {
  EXPECT_EQ(Translate(kTBp, Bytes({0x01, 0x63, 0x54, 0x32, 0x2e, 0x32, 0x2e, 0x31})),
            R"({"data_type":"Energy_Saver","battery_level":99,"signal_strength":84,"software_version":"2.2.1"})");
}
TEST(EnergySaverVectors, Tv11BlueprintNoMatchIsEmptyObject) {
  EXPECT_EQ(Translate(kTBp, Bytes({0x02})), "{}");
}
TEST(EnergySaverVectors, Tv14Endbyte) {
  EXPECT_EQ(Translate(kTEndbyte, Bytes({0xff, 0x00, 0x00, 0x01, 0x02})), R"({"v":258})");
}
TEST(EnergySaverVectors, Tv15DeepJson) {
  EXPECT_EQ(Translate(kTDeep, Bytes({0x01, 0x00, 0x00, 0x05, 0x8c, 0x6f, 0x6c, 0x65, 0x67})),
            R"({"car":{"running":true,"fuel":1420,"driver":"oleg"}})");
}
TEST(EnergySaverVectors, LocationFieldsRecorded) {
  auto p = MustCompile(kTLoc);
  ASSERT_TRUE(p);
  ASSERT_EQ(p->location_fields().size(), 2u);
  EXPECT_EQ(p->location_fields()[0].asset, "longitude");
  EXPECT_EQ(p->location_fields()[0].axis, LocationAxis::kLongitude);
  EXPECT_EQ(p->location_fields()[1].asset, "latitude");
  EXPECT_EQ(p->location_fields()[1].axis, LocationAxis::kLatitude);
  // The value itself is output like any float64 (little endian here).
  std::vector<std::byte> payload(16);
  const auto lon = std::bit_cast<uint64_t>(6.956068);
  const auto lat = std::bit_cast<uint64_t>(50.934544);
  for (int i = 0; i < 8; ++i) {
    payload[static_cast<size_t>(i)] = static_cast<std::byte>(lon >> (8 * i));
    payload[static_cast<size_t>(8 + i)] = static_cast<std::byte>(lat >> (8 * i));
  }
  EXPECT_EQ(Translate(kTLoc, payload), R"({"longitude":6.956068,"latitude":50.934544})");
}

// The little-endian float64 payload T-loc reads: longitude at 0, latitude at 8.
std::vector<std::byte> LocPayload(double lon, double lat) {
  std::vector<std::byte> payload(16);
  const auto lon_bits = std::bit_cast<uint64_t>(lon);
  const auto lat_bits = std::bit_cast<uint64_t>(lat);
  for (int i = 0; i < 8; ++i) {
    payload[static_cast<size_t>(i)] = static_cast<std::byte>(lon_bits >> (8 * i));
    payload[static_cast<size_t>(8 + i)] = static_cast<std::byte>(lat_bits >> (8 * i));
  }
  return payload;
}

// Runs `templ` over `payload`; the location text as "lon,lat", or "none".
std::string LocationOf(std::string_view templ, const std::vector<std::byte>& payload) {
  Translator tr(MustCompile(templ));
  std::vector<char> out(tr.program().MaxOutputSize(payload.size()));
  if (!tr.Translate(payload, out)) return "error";
  const auto loc = tr.location();
  if (!loc) return "none";
  return std::string(loc->longitude) + "," + std::string(loc->latitude);
}

TEST(EnergySaverLocation, BothAxesGiveTheLocationAsTheJsonPrintsIt) {
  EXPECT_EQ(LocationOf(kTLoc, LocPayload(6.956068, 50.934544)), "6.956068,50.934544");
  EXPECT_EQ(LocationOf(kTLoc, LocPayload(-0.0, 7.490929188596135e+247)),
            "0,7.490929188596135e+247");
}
TEST(EnergySaverLocation, NoLocationWithoutBothFiniteAxes) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_EQ(LocationOf(kTLoc, LocPayload(nan, 50.5)), "none");
  EXPECT_EQ(LocationOf(kTLoc, LocPayload(6.5, inf)), "none");
  // TV-3 is a longitude without custom_type: no location at all.
  EXPECT_EQ(LocationOf(kTLon, Bytes({0x42, 0x4b, 0xbc, 0xf9})), "none");
  // Only a longitude field.
  EXPECT_EQ(LocationOf(R"({"sense":[{"asset":"lon","custom_type":"location_long","value":{"byte":0,"bytelength":8,"type":"float","byteorder":"little"}}]})",
                       LocPayload(6.5, 1.0)),
            "none");
  // TV-9: the extraction fails, and so there is no location either.
  EXPECT_EQ(LocationOf(kTLoc, Bytes({0x01})), "error");
}
TEST(EnergySaverLocation, AValueReplacedAfterwardsIsNotTheLocation) {
  constexpr std::string_view kReplaced =
      R"({"sense":[{"asset":"p.lon","custom_type":"location_long","value":{"byte":0,"bytelength":8,"type":"float","byteorder":"little"}},)"
      R"({"asset":"p.lat","custom_type":"location_lat","value":{"byte":8,"bytelength":8,"type":"float","byteorder":"little"}},)"
      R"({"asset":"p.lat","value":"unknown"}]})";
  EXPECT_EQ(LocationOf(kReplaced, LocPayload(6.5, 50.25)), "none");
  constexpr std::string_view kInSwitch =
      R"({"sense":[{"switch":{"byte":16,"type":"uint"},"on":[)"
      R"({"case":1,"do":[{"asset":"lon","custom_type":"location_long","value":{"byte":0,"bytelength":8,"type":"float","byteorder":"little"}},)"
      R"({"asset":"lat","custom_type":"location_lat","value":{"byte":8,"bytelength":8,"type":"float","byteorder":"little"}}]},)"
      R"({"default":true,"do":[{"asset":"kind","value":"no fix"}]}]}]})";
  auto payload = LocPayload(6.5, 50.25);
  payload.push_back(std::byte{1});
  EXPECT_EQ(LocationOf(kInSwitch, payload), "6.5,50.25");
  payload.back() = std::byte{2};
  EXPECT_EQ(LocationOf(kInSwitch, payload), "none");
}
TEST(EnergySaverLocation, ALaterTranslationForgetsTheEarlierLocation) {
  Translator tr(MustCompile(kTLoc));
  std::vector<char> out(tr.program().MaxOutputSize(16));
  ASSERT_TRUE(tr.Translate(LocPayload(1.5, 2.5), out));
  ASSERT_TRUE(tr.location());
  ASSERT_FALSE(tr.Translate(Bytes({0x01}), out));
  EXPECT_FALSE(tr.location());
}

// ---- Byte ranges and extraction errors ---------------------------------------------------

TEST(EnergySaverRanges, EndbyteOnlyAndByteWithEndbyte) {
  EXPECT_EQ(Translate(One(R"({"endbyte":-1,"type":"uint"})"), Bytes({1, 2, 3})), R"({"x":3})");
  EXPECT_EQ(Translate(One(R"({"byte":1,"endbyte":-1,"type":"hex"})"), Bytes({1, 2, 3, 4})),
            R"({"x":"0203"})");
  EXPECT_EQ(Translate(One(R"({"byte":2,"endbyte":-2,"type":"hex"})"), Bytes({1, 2, 3, 4})),
            R"({"x":""})");
  EXPECT_EQ(Translate(One(R"({"byte":0,"endbyte":0,"type":"string"})"), {}), R"({"x":""})");
}
TEST(EnergySaverRanges, ErrorsPrintTheResolvedRange) {
  EXPECT_EQ(Translate(One(R"({"endbyte":-4,"bytelength":4,"type":"uint"})"), Bytes({1, 2})),
            "ERROR: Asset path:x, Error: can't extract [-2:2] from 2 bytes");
  EXPECT_EQ(Translate(One(R"({"byte":3,"endbyte":-2,"type":"hex"})"), Bytes({1, 2, 3, 4})),
            "ERROR: Asset path:x, Error: can't extract [3:2] from 4 bytes");
  EXPECT_EQ(Translate(One(R"({"byte":0,"type":"int"})"), {}),
            "ERROR: Asset path:x, Error: can't extract [0:1] from 0 bytes");
  EXPECT_EQ(Translate(One(R"({"endbyte":-1,"bytelength":2,"type":"hex"})"), Bytes({1, 2})),
            "ERROR: Asset path:x, Error: can't extract [1:3] from 2 bytes");
}
TEST(EnergySaverRanges, FirstFailingExtractionInExecutionOrderWins) {
  const std::string t =
      R"({"sense":[{"asset":"ok","value":"c"},{"asset":"first.bad","value":{"byte":5,"type":"int"}},)"
      R"({"asset":"second","value":{"byte":9,"type":"int"}}]})";
  EXPECT_EQ(Translate(t, Bytes({1})), "ERROR: Asset path:first.bad, Error: can't extract [5:6] from 1 bytes");
}
TEST(EnergySaverRanges, SwitchSelectorErrorNamesItsJsonPath) {
  const std::string t =
      R"({"sense":[{"asset":"a","value":"c"},{"switch":{"byte":3,"bytelength":2,"type":"uint"},"on":[]}]})";
  EXPECT_EQ(Translate(t, Bytes({1})), "ERROR: Asset path:sense[1].switch, Error: can't extract [3:5] from 1 bytes");
}
TEST(EnergySaverRanges, ExtraBytesAreIgnored) {
  EXPECT_EQ(Translate(kTAlarm, Bytes({0, 9, 9, 9})), R"({"motion":false})");
}
TEST(EnergySaverErrors, FormatErrorNeedsRoomForAllOfIt) {
  const TranslateError e{TranslateErrc::kCannotExtract, "Temperature", 200, 201, 2};
  const std::string_view expected = "Asset path:Temperature, Error: can't extract [200:201] from 2 bytes";
  std::array<char, 128> out;
  ASSERT_EQ(FormatError(e, out), expected.size());
  EXPECT_EQ(std::string_view(out.data(), expected.size()), expected);
  for (size_t n = 0; n < expected.size(); ++n) {
    EXPECT_EQ(FormatError(e, std::span<char>(out.data(), n)), 0u) << n;
  }
  const TranslateError small{TranslateErrc::kOutputTooSmall, {}, 0, 0, 5};
  const size_t n = FormatError(small, out);
  EXPECT_EQ(std::string_view(out.data(), n), "Error: translated JSON does not fit the output buffer");
}

// ---- Value types -------------------------------------------------------------------------

TEST(EnergySaverValues, IntegersBothByteOrders) {
  EXPECT_EQ(Translate(One(R"({"byte":0,"bytelength":2,"type":"int","byteorder":"little"})"),
                Bytes({0x34, 0x12})), R"({"x":4660})");
  EXPECT_EQ(Translate(One(R"({"byte":0,"bytelength":4,"type":"uint","byteorder":"little"})"),
                Bytes({0x78, 0x56, 0x34, 0x12})), R"({"x":305419896})");
  EXPECT_EQ(Translate(One(R"({"byte":0,"bytelength":4,"type":"uint"})"), Bytes({0x12, 0x34, 0x56, 0x78})),
            R"({"x":305419896})");
  EXPECT_EQ(Translate(One(R"({"byte":0,"type":"uint"})"), Bytes({0xff})), R"({"x":255})");
}
TEST(EnergySaverValues, NegativeIntegers) {
  EXPECT_EQ(Translate(One(R"({"byte":0,"type":"int"})"), Bytes({0xff})), R"({"x":-1})");
  EXPECT_EQ(Translate(One(R"({"byte":0,"bytelength":2,"type":"int"})"), Bytes({0xff, 0x38})), R"({"x":-200})");
  EXPECT_EQ(Translate(One(R"({"byte":0,"bytelength":2,"type":"int","byteorder":"little"})"), Bytes({0x38, 0xff})),
            R"({"x":-200})");
  EXPECT_EQ(Translate(One(R"({"byte":0,"bytelength":4,"type":"int"})"), Bytes({0x80, 0, 0, 0})),
            R"({"x":-2147483648})");
  EXPECT_EQ(Translate(One(R"({"byte":0,"bytelength":8,"type":"int"})"), Bytes({0x80, 0, 0, 0, 0, 0, 0, 0})),
            R"({"x":-9223372036854775808})");
  EXPECT_EQ(Translate(One(R"({"byte":0,"bytelength":8,"type":"int"})"),
                Bytes({0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})), R"({"x":9223372036854775807})");
}
TEST(EnergySaverValues, Uint64MaxIsExact) {
  EXPECT_EQ(Translate(One(R"({"byte":0,"bytelength":8,"type":"uint"})"),
                Bytes({0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})), R"({"x":18446744073709551615})");
  // Above 2^53: exact, not rounded through a double.
  EXPECT_EQ(Translate(One(R"({"byte":0,"bytelength":8,"type":"uint"})"),
                Bytes({0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01})), R"({"x":9007199254740993})");
}

std::string Float32(float f) {
  const auto u = std::bit_cast<uint32_t>(f);
  return Translate(One(R"({"byte":0,"bytelength":4,"type":"float"})"),
             Bytes({static_cast<int>(u >> 24), static_cast<int>(u >> 16 & 0xff),
                    static_cast<int>(u >> 8 & 0xff), static_cast<int>(u & 0xff)}));
}
std::string Float64(double d) {
  const auto u = std::bit_cast<uint64_t>(d);
  std::vector<std::byte> p;
  for (int i = 7; i >= 0; --i) p.push_back(static_cast<std::byte>(u >> (8 * i)));
  return Translate(One(R"({"byte":0,"bytelength":8,"type":"float"})"), p);
}

TEST(EnergySaverValues, Float32PrintsShortestFloat32Decimal) {
  EXPECT_EQ(Float32(50.934544f), R"({"x":50.934544})");
  EXPECT_EQ(Float32(6.956068f), R"({"x":6.956068})");
  EXPECT_EQ(Float32(0.1f), R"({"x":0.1})");
  EXPECT_EQ(Float32(1.0f), R"({"x":1})");
  EXPECT_EQ(Float32(-2.5f), R"({"x":-2.5})");
  EXPECT_EQ(Float32(16777216.0f), R"({"x":16777216})");
  EXPECT_EQ(Float32(3.4028235e38f), R"({"x":3.4028235e+38})");
  EXPECT_EQ(Float32(1e-7f), R"({"x":1e-7})");
  EXPECT_EQ(Float32(1.5e-6f), R"({"x":0.0000015})");
  EXPECT_EQ(Float32(1.4e-45f), R"({"x":1e-45})");  // smallest subnormal
  EXPECT_EQ(Float32(0.0f), R"({"x":0})");
  EXPECT_EQ(Float32(-0.0f), R"({"x":0})");  // as JSON.stringify(-0)
  EXPECT_EQ(Float32(std::numeric_limits<float>::quiet_NaN()), R"({"x":null})");
  EXPECT_EQ(Float32(std::numeric_limits<float>::infinity()), R"({"x":null})");
  EXPECT_EQ(Float32(-std::numeric_limits<float>::infinity()), R"({"x":null})");
  // The documented bytes, little endian too.
  EXPECT_EQ(Translate(One(R"({"byte":0,"bytelength":4,"type":"float","byteorder":"little"})"),
                Bytes({0x1c, 0x98, 0xde, 0x40})), R"({"x":6.956068})");
}
TEST(EnergySaverValues, Float64PrintsShortestDoubleJsStyle) {
  EXPECT_EQ(Float64(7.490929188596135e+247), R"({"x":7.490929188596135e+247})");
  EXPECT_EQ(Float64(24.105078), R"({"x":24.105078})");
  EXPECT_EQ(Float64(0.1), R"({"x":0.1})");
  EXPECT_EQ(Float64(1e21), R"({"x":1e+21})");
  EXPECT_EQ(Float64(1e20), R"({"x":100000000000000000000})");
  EXPECT_EQ(Float64(123456789012345680000.0), R"({"x":123456789012345680000})");
  EXPECT_EQ(Float64(0.000001), R"({"x":0.000001})");
  EXPECT_EQ(Float64(1.5e-7), R"({"x":1.5e-7})");
  EXPECT_EQ(Float64(-1.7976931348623157e308), R"({"x":-1.7976931348623157e+308})");
  EXPECT_EQ(Float64(5e-324), R"({"x":5e-324})");
  EXPECT_EQ(Float64(-0.0), R"({"x":0})");
  EXPECT_EQ(Float64(std::numeric_limits<double>::quiet_NaN()), R"({"x":null})");
  EXPECT_EQ(Float64(-std::numeric_limits<double>::infinity()), R"({"x":null})");
}
TEST(EnergySaverValues, BooleanAnyLength) {
  const std::string two = One(R"({"byte":0,"bytelength":2,"type":"boolean"})");
  EXPECT_EQ(Translate(two, Bytes({0, 0})), R"({"x":false})");
  EXPECT_EQ(Translate(two, Bytes({0, 1})), R"({"x":true})");
  EXPECT_EQ(Translate(two, Bytes({0x80, 0})), R"({"x":true})");
  EXPECT_EQ(Translate(One(R"({"byte":0,"bytelength":3,"type":"boolean","byteorder":"little"})"), Bytes({0, 0, 2})),
            R"({"x":true})");
  EXPECT_EQ(Translate(One(R"({"byte":0,"endbyte":0,"type":"boolean"})"), {}), R"({"x":false})");
}
TEST(EnergySaverValues, StringEscapesQuotesControlsAndInvalidUtf8) {
  const std::string t = One(R"({"byte":0,"endbyte":0,"type":"string"})");
  EXPECT_EQ(Translate(t, Bytes({'a', '"', 'b', '\\', 'c'})), R"({"x":"a\"b\\c"})");
  EXPECT_EQ(Translate(t, Bytes({'a', 0x00, 0x1f, '\n'})), R"({"x":"a\u0000\u001f\u000a"})");
  EXPECT_EQ(Translate(t, Bytes({0xc3, 0xbc, 0xe2, 0x82, 0xac})), "{\"x\":\"\xc3\xbc\xe2\x82\xac\"}");
  EXPECT_EQ(Translate(t, Bytes({'a', 0xff, 'b'})), R"({"x":"a\ufffdb"})");
  EXPECT_EQ(Translate(t, Bytes({0xe2, 0x82})), R"({"x":"\ufffd"})");  // maximal subpart: one U+FFFD
  EXPECT_EQ(Translate(t, Bytes({0xed, 0xa0, 0x80})), R"({"x":"\ufffd\ufffd\ufffd"})");  // surrogate
}
TEST(EnergySaverValues, ByteorderNeverReversesStringOrHex) {
  EXPECT_EQ(Translate(One(R"({"byte":0,"bytelength":3,"type":"string","byteorder":"little"})"), Bytes({'a', 'b', 'c'})),
            R"({"x":"abc"})");
  EXPECT_EQ(Translate(One(R"({"byte":0,"bytelength":3,"type":"hex","byteorder":"little"})"), Bytes({0xAB, 0x01, 0xF0})),
            R"({"x":"ab01f0"})");
}
TEST(EnergySaverValues, ConstantsAreJsonStrings) {
  EXPECT_EQ(Translate(R"({"sense":[{"asset":"k","value":"q\"uo\\te \u0001 \u00fc"}]})", {}),
            "{\"k\":\"q\\\"uo\\\\te \\u0001 \xc3\xbc\"}");
  EXPECT_EQ(Translate(R"({"sense":[{"asset":"k\"ey","value":"12"}]})", {}), R"({"k\"ey":"12"})");
}

// ---- Object building ---------------------------------------------------------------------

TEST(EnergySaverObjects, LastWriteWinsKeepingFirstPosition) {
  const std::string t = R"({"sense":[{"asset":"a","value":"1"},{"asset":"b","value":"2"},{"asset":"a","value":"3"}]})";
  EXPECT_EQ(Translate(t, {}), R"({"a":"3","b":"2"})");
}
TEST(EnergySaverObjects, ScalarThenChildBecomesObject) {
  const std::string t = R"({"sense":[{"asset":"a","value":"1"},{"asset":"z","value":"2"},{"asset":"a.b","value":"3"}]})";
  EXPECT_EQ(Translate(t, {}), R"({"a":{"b":"3"},"z":"2"})");
}
TEST(EnergySaverObjects, ChildThenScalarDropsObject) {
  const std::string t = R"({"sense":[{"asset":"a.b","value":"1"},{"asset":"a.c","value":"2"},{"asset":"a","value":"3"}]})";
  EXPECT_EQ(Translate(t, {}), R"({"a":"3"})");
  // Re-creating the object starts it empty: "b" does not come back.
  const std::string again =
      R"({"sense":[{"asset":"a.b","value":"1"},{"asset":"a","value":"2"},{"asset":"a.c.d","value":"3"}]})";
  EXPECT_EQ(Translate(again, {}), R"({"a":{"c":{"d":"3"}}})");
}
TEST(EnergySaverObjects, KeysInFirstWriteOrderPerObject) {
  const std::string t =
      R"({"sense":[{"asset":"o.z","value":"1"},{"asset":"o.a","value":"2"},{"asset":"p","value":"3"},{"asset":"o.m","value":"4"},{"asset":"9","value":"5"}]})";
  EXPECT_EQ(Translate(t, {}), R"({"o":{"z":"1","a":"2","m":"4"},"p":"3","9":"5"})");
}
TEST(EnergySaverObjects, TranslatorReuseStartsFresh) {
  auto p = MustCompile(kTFull);
  ASSERT_TRUE(p);
  Translator tr(p);
  std::array<char, 512> out;
  auto a = tr.Translate(Bytes({0x00, 0x42, 0x4b, 0xbc, 0xf9, 0x40, 0xde, 0x98, 0x1c, 0x00, 0x78}), out);
  ASSERT_TRUE(a);
  EXPECT_EQ(std::string(out.data(), *a),
            R"({"message_code":0,"data_type":"Position","gps":{"lat":50.934544,"lon":-6.2589733e+34},)"
            R"("speed":7168,"full_payload":"00424bbcf940de981c0078"})");
  auto b = tr.Translate(Bytes({0x07}), out);
  ASSERT_TRUE(b);
  EXPECT_EQ(std::string(out.data(), *b),
            R"({"message_code":7,"data_type":"Unsupported type","full_payload":"07"})");
  EXPECT_FALSE(tr.Translate({}, out));
  auto c = tr.Translate(Bytes({0x07}), out);
  ASSERT_TRUE(c);
  EXPECT_EQ(*c, *b);
}

// ---- Switch ------------------------------------------------------------------------------

std::string SwitchOn(std::string_view selector, std::string_view cases) {
  return R"({"sense":[{"switch":)" + std::string(selector) + R"(,"on":[)" + std::string(cases) + "]}]}";
}

TEST(EnergySaverSwitch, StringCases) {
  const std::string t = SwitchOn(R"({"byte":0,"type":"string"})",
                                 R"({"case":"T","do":[{"asset":"k","value":"temp"}]},)"
                                 R"({"case":"S","do":[{"asset":"k","value":"status"}]})");
  EXPECT_EQ(Translate(t, Bytes({'T'})), R"({"k":"temp"})");
  EXPECT_EQ(Translate(t, Bytes({'S'})), R"({"k":"status"})");
  EXPECT_EQ(Translate(t, Bytes({'s'})), "{}");
}
TEST(EnergySaverSwitch, StringCaseWithReplacementCharMatchesInvalidUtf8) {
  const std::string t = SwitchOn(R"({"byte":0,"bytelength":2,"type":"string"})",
                                 R"({"case":"a\ufffd","do":[{"asset":"k","value":"bad"}]})");
  EXPECT_EQ(Translate(t, Bytes({'a', 0xff})), R"({"k":"bad"})");
  EXPECT_EQ(Translate(t, Bytes({'a', 'b'})), "{}");
}
TEST(EnergySaverSwitch, FirstMatchRunsOnly) {
  const std::string t = SwitchOn(R"({"byte":0,"type":"uint"})",
                                 R"({"default":true,"do":[{"asset":"k","value":"default"}]},)"
                                 R"({"case":1,"do":[{"asset":"k","value":"first"}]},)"
                                 R"({"case":1,"do":[{"asset":"k","value":"second"},{"asset":"z","value":"z"}]})");
  EXPECT_EQ(Translate(t, Bytes({1})), R"({"k":"first"})");
  EXPECT_EQ(Translate(t, Bytes({2})), R"({"k":"default"})");  // default runs only without a match
}
TEST(EnergySaverSwitch, NoMatchNoDefaultProducesNothing) {
  const std::string t = SwitchOn(R"({"byte":0,"type":"int"})", R"({"case":5,"do":[{"asset":"k","value":"v"}]})");
  EXPECT_EQ(Translate(t, Bytes({4})), "{}");
}
TEST(EnergySaverSwitch, JsonTypedNumericEquality) {
  const std::string t = SwitchOn(R"({"byte":0,"type":"int"})",
                                 R"({"case":255,"do":[{"asset":"k","value":"255"}]},)"
                                 R"({"case":-1.0,"do":[{"asset":"k","value":"minus one"}]},)"
                                 R"({"case":2.5,"do":[{"asset":"k","value":"never"}]})");
  EXPECT_EQ(Translate(t, Bytes({0xff})), R"({"k":"minus one"})");  // int8 0xff is -1, not 255
  const std::string u = SwitchOn(R"({"byte":0,"type":"uint"})",
                                 R"({"case":-1,"do":[{"asset":"k","value":"minus one"}]},)"
                                 R"({"case":255,"do":[{"asset":"k","value":"255"}]})");
  EXPECT_EQ(Translate(u, Bytes({0xff})), R"({"k":"255"})");
  const std::string big = SwitchOn(R"({"byte":0,"bytelength":8,"type":"uint"})",
                                   R"({"case":18446744073709551615,"do":[{"asset":"k","value":"max"}]})");
  EXPECT_EQ(Translate(big, Bytes({0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})), R"({"k":"max"})");
}
TEST(EnergySaverSwitch, FloatCaseReadAtValuePrecision) {
  const std::string t = SwitchOn(R"({"byte":0,"bytelength":4,"type":"float"})",
                                 R"({"case":50.934544,"do":[{"asset":"k","value":"cologne"}]},)"
                                 R"({"case":1,"do":[{"asset":"k","value":"one"}]})");
  EXPECT_EQ(Translate(t, Bytes({0x42, 0x4b, 0xbc, 0xf9})), R"({"k":"cologne"})");
  EXPECT_EQ(Translate(t, Bytes({0x3f, 0x80, 0x00, 0x00})), R"({"k":"one"})");
  EXPECT_EQ(Translate(t, Bytes({0x7f, 0xc0, 0x00, 0x00})), "{}");  // NaN
}
TEST(EnergySaverSwitch, BooleanAndHexCases) {
  const std::string b = SwitchOn(R"({"byte":0,"bytelength":2,"type":"boolean"})",
                                 R"({"case":true,"do":[{"asset":"k","value":"on"}]},{"case":false,"do":[{"asset":"k","value":"off"}]})");
  EXPECT_EQ(Translate(b, Bytes({0, 1})), R"({"k":"on"})");
  EXPECT_EQ(Translate(b, Bytes({0, 0})), R"({"k":"off"})");
  const std::string h = SwitchOn(R"({"byte":0,"bytelength":2,"type":"hex"})",
                                 R"({"case":"beef","do":[{"asset":"k","value":"beef"}]})");
  EXPECT_EQ(Translate(h, Bytes({0xbe, 0xef})), R"({"k":"beef"})");
  EXPECT_EQ(Translate(h, Bytes({0xbe, 0xee})), "{}");
}
TEST(EnergySaverSwitch, NestedSwitchAndCommentEntries) {
  const std::string t =
      R"({"comment":"c","name":"n","version":"1","sense":[{"comment":"only a comment"},)"
      R"({"switch":{"byte":0,"type":"uint"},"comment":"outer","on":[{"comment":"note"},)"
      R"({"case":1,"do":[{"switch":{"byte":1,"type":"uint"},"on":[)"
      R"({"case":2,"do":[{"asset":"a.b","value":"12"}]},{"default":true,"do":[{"asset":"a.c","value":"1x"}]}]},)"
      R"({"asset":"after","value":"inner done"}]}]},{"asset":"end","value":"e"}]})";
  EXPECT_EQ(Translate(t, Bytes({1, 2})), R"({"a":{"b":"12"},"after":"inner done","end":"e"})");
  EXPECT_EQ(Translate(t, Bytes({1, 3})), R"({"a":{"c":"1x"},"after":"inner done","end":"e"})");
  EXPECT_EQ(Translate(t, Bytes({0, 3})), R"({"end":"e"})");
}

// ---- Compile errors (one per rule) -------------------------------------------------------

TEST(EnergySaverCompile, UnknownTypeNamesPathAndChoices) {
  const std::string t =
      R"({"sense":[{"asset":"a","value":"x"},{"switch":{"byte":0,"type":"int"},"on":[{"case":1,"do":[)"
      R"({"asset":"a","value":"x"},{"asset":"b","value":"y"},{"asset":"c","value":{"byte":0,"type":"integer"}}]}]}]})";
  EXPECT_EQ(CompileError(t),
            R"(sense[1].on[0].do[2].value.type: unknown type "integer" (expected int, uint, float, boolean, string, hex))");
}
TEST(EnergySaverCompile, SelectorRules) {
  EXPECT_EQ(CompileError(One(R"({"type":"int"})")), R"(sense[0].value: needs "byte" or "endbyte")");
  EXPECT_EQ(CompileError(One(R"({"byte":0,"endbyte":0,"bytelength":2,"type":"hex"})")),
            R"(sense[0].value: "bytelength" cannot be given with both "byte" and "endbyte")");
  EXPECT_EQ(CompileError(One(R"({"byte":0,"bytelength":3,"type":"int"})")),
            "sense[0].value.bytelength: int needs 1, 2, 4 or 8 (got 3)");
  EXPECT_EQ(CompileError(One(R"({"byte":0,"bytelength":16,"type":"uint"})")),
            "sense[0].value.bytelength: uint needs 1, 2, 4 or 8 (got 16)");
  EXPECT_EQ(CompileError(One(R"({"byte":0,"byteorder":"middle","type":"int"})")),
            R"(sense[0].value.byteorder: must be "big" or "little")");
  EXPECT_EQ(CompileError(One(R"({"byte":0,"byteorder":1,"type":"int"})")),
            R"(sense[0].value.byteorder: must be "big" or "little")");
  EXPECT_EQ(CompileError(One(R"({"byte":0,"type":"float"})")),
            R"(sense[0].value: float needs "bytelength" 4 or 8)");
  EXPECT_EQ(CompileError(One(R"({"byte":0,"bytelength":2,"type":"float"})")),
            "sense[0].value.bytelength: float needs 4 or 8 (got 2)");
  EXPECT_EQ(CompileError(One(R"({"byte":0,"endbyte":0,"type":"int"})")),
            R"(sense[0].value: int needs a fixed "bytelength" (1, 2, 4 or 8); "byte" with "endbyte" gives a variable length)");
  EXPECT_EQ(CompileError(One(R"({"byte":0})")), R"(sense[0].value: needs "type")");
  EXPECT_EQ(CompileError(One(R"({"byte":0,"type":3})")), "sense[0].value.type: must be a string");
  EXPECT_EQ(CompileError(One(R"({"byte":-1,"type":"int"})")),
            "sense[0].value.byte: must be an integer >= 0 (got -1, limit 0)");
  EXPECT_EQ(CompileError(One(R"({"byte":1.5,"type":"int"})")), "sense[0].value.byte: must be an integer >= 0");
  EXPECT_EQ(CompileError(One(R"({"byte":"1","type":"int"})")), "sense[0].value.byte: must be an integer >= 0");
  EXPECT_EQ(CompileError(One(R"({"byte":99999999999999999999,"type":"int"})")),
            "sense[0].value.byte: must be an integer >= 0");  // a float to nlohmann
  EXPECT_EQ(CompileError(One(R"({"byte":18446744073709551615,"type":"int"})")),
            "sense[0].value.byte: must be an integer >= 0 (got 18446744073709551615, limit 1048576)");
  EXPECT_EQ(CompileError(One(R"({"endbyte":1,"type":"int"})")),
            "sense[0].value.endbyte: must be an integer <= 0 (got 1, limit 0)");
  EXPECT_EQ(CompileError(One(R"({"byte":0,"bytelength":0,"type":"string"})")),
            "sense[0].value.bytelength: must be an integer >= 1 (got 0, limit 1)");
  EXPECT_EQ(CompileError(One(R"({"byte":0,"type":"int","bytes":2,"Type":"x"})")),
            R"(sense[0].value: unknown keys "bytes", "Type" (allowed: type, byte, endbyte, bytelength, byteorder, signed, comment))");
}
TEST(EnergySaverCompile, IgnorableKeysAndSigned) {
  EXPECT_EQ(Translate(One(R"({"byte":0,"type":"int","signed":true,"comment":"c","name":1,"version":"2"})"), Bytes({5})),
            R"({"x":5})");
  EXPECT_EQ(Translate(R"({"name":"n","version":"1.0","comment":"t","sense":[{"asset":"x","comment":"c","value":"v"}]})", {}),
            R"({"x":"v"})");
}
TEST(EnergySaverCompile, StatementRules) {
  EXPECT_EQ(CompileError(R"({"sense":[{"asset":"a","value":"b"},{"asset":"a","value":"b"},{"switch":{"byte":0,"type":"int"}}]})"),
            R"(sense[2]: switch without "on")");
  EXPECT_EQ(CompileError(R"({"sense":[{"on":[]}]})"), R"(sense[0]: "on" without "switch")");
  EXPECT_EQ(CompileError(R"({"sense":[{"a":1},{"switch":{"byte":0,"type":"int"},"on":[{"case":1,"do":[]},{"case":2}]}]})"),
            R"(sense[0]: unknown key "a" (allowed: asset, value, custom_type, switch, on, comment))");
  EXPECT_EQ(CompileError(R"({"sense":[{"comment":""},{"switch":{"byte":0,"type":"int"},"on":[{"case":1,"do":[]},{"case":2}]}]})"),
            R"(sense[1].on[1]: case without "do")");
  EXPECT_EQ(CompileError(R"({"sense":[{"switch":{"byte":0,"type":"int"},"on":[{"default":true}]}]})"),
            R"(sense[0].on[0]: default without "do")");
  EXPECT_EQ(CompileError(R"({"sense":[{"switch":{"byte":0,"type":"int"},"on":[{"default":false,"do":[]}]}]})"),
            "sense[0].on[0].default: must be true");
  EXPECT_EQ(CompileError(R"({"sense":[{"switch":{"byte":0,"type":"int"},"on":[{"default":true,"do":[]},{"default":true,"do":[]}]}]})"),
            "sense[0].on[1]: second default");
  EXPECT_EQ(CompileError(R"({"sense":[{"switch":{"byte":0,"type":"int"},"on":[{"case":1,"default":true,"do":[]}]}]})"),
            R"(sense[0].on[0]: has both "case" and "default")");
  EXPECT_EQ(CompileError(R"({"sense":[{"switch":{"byte":0,"type":"int"},"on":[{"do":[]}]}]})"),
            R"(sense[0].on[0]: needs "case" or "default")");
  EXPECT_EQ(CompileError(R"({"sense":[{"switch":{"byte":0,"type":"int"},"on":[{"case":1,"do":[],"then":1}]}]})"),
            R"(sense[0].on[0]: unknown key "then" (allowed: case, do, comment))");
  EXPECT_EQ(CompileError(R"({"sense":[{"switch":{"byte":0,"type":"int"},"on":{}}]})"), "sense[0].on: must be an array");
  EXPECT_EQ(CompileError(R"({"sense":[{"switch":"x","on":[]}]})"), "sense[0].switch: must be a payload selector object");
  EXPECT_EQ(CompileError(R"({"sense":[{"switch":{"byte":0,"type":"int"},"on":[{"case":1,"do":{}}]}]})"),
            "sense[0].on[0].do: must be an array");
  EXPECT_EQ(CompileError(R"({"sense":[{"switch":{"byte":0,"type":"int"},"on":[3]}]})"), "sense[0].on[0]: case must be an object");
  EXPECT_EQ(CompileError(R"({"sense":[{"asset":"a","switch":{"byte":0,"type":"int"},"on":[]}]})"),
            R"(sense[0]: has both "asset" and "switch" keys)");
  EXPECT_EQ(CompileError(R"({"sense":[{}]})"), R"(sense[0]: empty statement (needs "asset" or "switch"))");
  EXPECT_EQ(CompileError(R"({"sense":[1]})"), "sense[0]: statement must be an object");
  EXPECT_EQ(CompileError(R"({"sense":[{"value":"v"}]})"), R"(sense[0]: mapping without "asset")");
  EXPECT_EQ(CompileError(R"({"sense":[{"asset":"a"}]})"), R"(sense[0]: mapping without "value")");
  EXPECT_EQ(CompileError(R"({"sense":[{"asset":"a","value":1}]})"),
            "sense[0].value: must be a string constant or a payload selector object");
  EXPECT_EQ(CompileError(R"({"sense":[{"asset":["a"],"value":"v"}]})"), "sense[0].asset: must be a string");
  EXPECT_EQ(CompileError(R"({"sense":[{"asset":"a","value":"v","extra":1}]})"),
            R"(sense[0]: unknown key "extra" (allowed: asset, value, custom_type, comment))");
}
TEST(EnergySaverCompile, CaseLabelsMustBeAbleToMatch) {
  EXPECT_EQ(CompileError(SwitchOn(R"({"byte":0,"type":"int"})", R"({"case":"1","do":[]})")),
            "sense[0].on[0].case: a string case never matches a int switch");
  EXPECT_EQ(CompileError(SwitchOn(R"({"byte":0,"type":"string"})", R"({"case":1,"do":[]})")),
            "sense[0].on[0].case: a number case never matches a string switch");
  EXPECT_EQ(CompileError(SwitchOn(R"({"byte":0,"type":"boolean"})", R"({"case":1,"do":[]})")),
            "sense[0].on[0].case: a number case never matches a boolean switch");
  EXPECT_EQ(CompileError(SwitchOn(R"({"byte":0,"type":"hex"})", R"({"case":"0A","do":[]})")),
            R"(sense[0].on[0].case: a hex switch needs lowercase hex digits, two per byte (got "0A"))");
  EXPECT_EQ(CompileError(SwitchOn(R"({"byte":0,"type":"int"})", R"({"case":null,"do":[]})")),
            "sense[0].on[0].case: must be a number, string or boolean");
  EXPECT_EQ(CompileError(SwitchOn(R"({"byte":0,"type":"int"})", R"({"case":[1],"do":[]})")),
            "sense[0].on[0].case: must be a number, string or boolean");
}
TEST(EnergySaverCompile, AssetPathRules) {
  EXPECT_EQ(CompileError(R"({"sense":[{"asset":"a..b","value":"v"}]})"), R"(sense[0].asset: empty path segment in "a..b")");
  EXPECT_EQ(CompileError(R"({"sense":[{"asset":"","value":"v"}]})"), R"(sense[0].asset: empty path segment in "")");
  EXPECT_EQ(CompileError(R"({"sense":[{"asset":"a.","value":"v"}]})"), R"(sense[0].asset: empty path segment in "a.")");
  const std::string long_path(256, 'a');
  EXPECT_EQ(CompileError(R"({"sense":[{"asset":")" + long_path + R"(","value":"v"}]})"),
            "sense[0].asset: longer than 255 chars (got 256)");
  EXPECT_EQ(CompileError(R"({"sense":[{"asset":")" + std::string(255, 'a') + R"(","value":"v"}]})"), "compiled");
  std::string deep = "a";
  for (int i = 1; i < 32; ++i) deep += ".a";
  EXPECT_EQ(CompileError(R"({"sense":[{"asset":")" + deep + R"(","value":"v"}]})"), "compiled");
  EXPECT_EQ(CompileError(R"({"sense":[{"asset":")" + deep + R"(.a","value":"v"}]})"),
            "sense[0].asset: more than 32 path segments");
}
TEST(EnergySaverCompile, CustomTypeNeedsFloat64) {
  EXPECT_EQ(CompileError(R"({"sense":[{"asset":"lat","custom_type":"location_lat","value":{"byte":0,"bytelength":4,"type":"float"}}]})"),
            "sense[0].custom_type: location_lat needs a float value with bytelength 8");
  EXPECT_EQ(CompileError(R"({"sense":[{"asset":"lon","custom_type":"location_long","value":{"byte":0,"bytelength":8,"type":"int"}}]})"),
            "sense[0].custom_type: location_long needs a float value with bytelength 8");
  EXPECT_EQ(CompileError(R"({"sense":[{"asset":"lon","custom_type":"location_long","value":"1.5"}]})"),
            "sense[0].custom_type: location_long needs a float value with bytelength 8");
  EXPECT_EQ(CompileError(R"({"sense":[{"asset":"lon","custom_type":"altitude","value":"1.5"}]})"),
            R"(sense[0].custom_type: must be "location_lat" or "location_long")");
}
TEST(EnergySaverCompile, DocumentRules) {
  EXPECT_EQ(CompileError("[]"), "<root>: must be a JSON object");
  EXPECT_EQ(CompileError("{}"), R"(<root>: needs "sense")");
  EXPECT_EQ(CompileError(R"({"sense":{}})"), "sense: must be an array");
  EXPECT_EQ(CompileError(R"({"sense":[],"Sense":[]})"),
            R"(<root>: unknown key "Sense" (allowed: sense, comment))");
  EXPECT_EQ(CompileError(R"({"sense":[],"sense":[]})"), R"(<root>: duplicate key "sense")");
  EXPECT_EQ(CompileError(R"({"sense":[{"asset":"a","value":{"byte":0,"type":"int","byte":1}}]})"),
            R"(sense[0].value: duplicate key "byte")");
  EXPECT_EQ(CompileError("{\"sense\":[\n  {\"asset\":\"a\",,}]}"),
            "<root>: not valid JSON at line 2 column 16: syntax error while parsing object key - "
            "unexpected ','; expected string literal");
  EXPECT_EQ(CompileError(""),
            "<root>: not valid JSON at line 1 column 1: syntax error while parsing value - "
            "unexpected end of input; expected '[', '{', or a literal");
  EXPECT_EQ(Translate(R"({"sense":[]})", Bytes({1})), "{}");
}
TEST(EnergySaverCompile, ErrorsAreOneLine) {
  const std::string e = CompileError("{\"sense\":[{\"asset\":\"a\nb\",\"value\":1}]}");
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  const std::string f = CompileError(R"({"sense":[{"asset":"a\nb..","value":"v"}]})");
  // Quoted as every control-plane message quotes user text (common/quote.h): escaped.
  EXPECT_EQ(f, R"(sense[0].asset: empty path segment in "a\nb..")");
}
TEST(EnergySaverCompile, Limits) {
  std::string big = R"({"sense":[],"comment":")" + std::string(kMaxTemplateSize, 'x') + "\"}";
  EXPECT_EQ(CompileError(big), "<root>: template is " + std::to_string(big.size()) + " bytes (limit 65536)");

  std::string stmts = R"({"sense":[)";
  for (size_t i = 0; i <= kMaxStatements; ++i) stmts += std::string(i ? "," : "") + R"({"comment":""})";
  stmts += "]}";
  ASSERT_LE(stmts.size(), kMaxTemplateSize);
  EXPECT_EQ(CompileError(stmts), "sense[4096]: more than 4096 statements");

  const auto nested = [](size_t levels) {
    std::string t = R"({"sense":[)";
    for (size_t i = 0; i < levels; ++i) t += R"({"switch":{"byte":0,"type":"int"},"on":[{"case":0,"do":[)";
    t += R"({"asset":"deep","value":"v"})";
    for (size_t i = 0; i < levels; ++i) t += "]}]}";
    return t + "]}";
  };
  EXPECT_EQ(Translate(nested(kMaxNestingDepth), Bytes({0})), R"({"deep":"v"})");
  std::string path = "sense[0]";
  for (size_t i = 1; i <= kMaxNestingDepth; ++i) path += ".on[0].do[0]";
  EXPECT_EQ(CompileError(nested(kMaxNestingDepth + 1)), path + ": switch nesting deeper than 32");
}

// ---- Output buffer -----------------------------------------------------------------------

TEST(EnergySaverOutput, TooSmallAtEveryShorterLengthAndNoOverrun) {
  struct Vector {
    std::string templ;
    std::vector<std::byte> payload;
  };
  const std::vector<Vector> vectors = {
      {std::string(kTFeat), Bytes({0x00, 0x1A, 0x00, 0x37, 0x00})},
      {std::string(kTSwitch), Bytes({0x00, 0x42, 0x4b, 0xbc, 0xf9, 0x40, 0xde, 0x98, 0x1c, 0x00, 0x78})},
      {std::string(kTFull), Bytes({0x01, 0x01, 0x00, 0x00, 0x05, 0x8c, 0x6f, 0x6c, 0x65, 0x67})},
      {std::string(kTNested), {}},
      {One(R"({"byte":0,"endbyte":0,"type":"string"})"), Bytes({'a', 0xff, '"', 0x01, 0xc3, 0xbc})},
  };
  for (const Vector& v : vectors) {
    auto p = MustCompile(v.templ);
    ASSERT_TRUE(p);
    Translator tr(p);
    std::array<char, 1024> exact_buffer;
    auto exact = tr.Translate(v.payload, exact_buffer);
    ASSERT_TRUE(exact);
    EXPECT_LE(*exact, p->MaxOutputSize(v.payload.size()));
    constexpr size_t kGuard = 16;
    for (size_t n = 0; n < *exact; ++n) {
      std::vector<char> buffer(n + kGuard, '\x5a');
      auto r = tr.Translate(v.payload, std::span<char>(buffer.data(), n));
      ASSERT_FALSE(r) << n;
      EXPECT_EQ(r.error().code, TranslateErrc::kOutputTooSmall);
      for (size_t g = n; g < buffer.size(); ++g) ASSERT_EQ(buffer[g], '\x5a') << "overrun at " << n;
    }
    std::vector<char> fits(*exact);
    auto r = tr.Translate(v.payload, fits);
    ASSERT_TRUE(r);
    EXPECT_EQ(std::string(fits.data(), *r), std::string(exact_buffer.data(), *exact));
  }
}

// ---- Concurrency -------------------------------------------------------------------------

TEST(EnergySaverThreads, ProgramSharedTranslatorPerThread) {
  auto p = MustCompile(kTFull);
  ASSERT_TRUE(p);
  const auto payload = Bytes({0x01, 0x01, 0x00, 0x00, 0x05, 0x8c, 0x6f, 0x6c, 0x65, 0x67});
  std::array<int, 4> ok{};
  std::vector<std::thread> threads;
  for (size_t t = 0; t < ok.size(); ++t) {
    threads.emplace_back([&, t] {
      Translator tr(p);
      std::array<char, 512> out;
      for (int i = 0; i < 2000; ++i) {
        auto r = tr.Translate(payload, out);
        if (r && std::string_view(out.data(), *r).ends_with(R"("full_payload":"01010000058c6f6c6567"})")) {
          ++ok[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int n : ok) EXPECT_EQ(n, 2000);
}

// ---- Allocation --------------------------------------------------------------------------

TEST(EnergySaverAllocation, TranslateAllocatesNothing) {
  const std::vector<std::pair<std::string_view, std::vector<std::byte>>> cases = {
      {kTFeat, Bytes({0x00, 0x1A, 0x00, 0x37, 0x00})},
      {kTFull, Bytes({0x01, 0x01, 0x00, 0x00, 0x05, 0x8c, 0x6f, 0x6c, 0x65, 0x67})},
      {kTSwitch, Bytes({0x00, 0x42, 0x4b, 0xbc, 0xf9, 0x40, 0xde, 0x98, 0x1c, 0x00, 0x78})},
      {kTLoc, Bytes({0x01})},  // the error path too
      {kTLoc, LocPayload(6.956068, 50.934544)},  // a location
      {R"({"sense":[{"asset":"a.b","value":"1"},{"asset":"a","value":"2"},{"asset":"a.c","value":{"byte":0,"endbyte":0,"type":"string"}}]})",
       Bytes({'x', 0xff})},
  };
  for (const auto& [templ, payload] : cases) {
    auto p = MustCompile(templ);
    ASSERT_TRUE(p);
    Translator tr(p);
    std::array<char, 512> out;
    std::array<char, 8> tiny;
    size_t sink = 0;
    const long before = test::AllocationCount();
    for (int i = 0; i < 1000; ++i) {
      auto r = tr.Translate(payload, out);
      sink += r ? *r : FormatError(r.error(), out);
      if (const auto loc = tr.location()) sink += loc->longitude.size();
      auto t = tr.Translate(payload, tiny);
      sink += t ? 1 : 0;
    }
    EXPECT_EQ(test::AllocationCount() - before, 0) << templ;
    EXPECT_GT(sink, 0u);
  }
}

// ---- Spin: random templates × random payloads against an oracle --------------------------

using Json = nlohmann::ordered_json;

// UTF-8 decoding with U+FFFD per maximal ill-formed subpart (Unicode §3.9), written
// differently from the translator's: by code point, and a prefix is "maximal" when padding it
// with continuation bytes gives a valid sequence.
size_t LeadLength(unsigned char b) {
  return b < 0x80 ? 1 : b >= 0xc0 && b < 0xe0 ? 2 : b >= 0xe0 && b < 0xf0 ? 3 : b >= 0xf0 && b < 0xf8 ? 4 : 0;
}
bool ValidSequence(std::string_view s) {
  const auto b0 = static_cast<unsigned char>(s[0]);
  const size_t len = LeadLength(b0);
  if (len == 0 || len != s.size()) return false;
  if (len == 1) return true;
  uint32_t cp = b0 & (0xff >> (len + 1));
  for (size_t i = 1; i < len; ++i) {
    const auto b = static_cast<unsigned char>(s[i]);
    if ((b & 0xc0) != 0x80) return false;
    cp = cp << 6 | (b & 0x3f);
  }
  const uint32_t min = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
  return cp >= min && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
}
std::string DecodeUtf8(std::string_view s) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    const size_t len = LeadLength(static_cast<unsigned char>(s[i]));
    if (len != 0 && i + len <= s.size() && ValidSequence(s.substr(i, len))) {
      out.append(s.substr(i, len));
      i += len;
      continue;
    }
    size_t skip = 1;
    for (size_t m = 2; len != 0 && m < len && i + m <= s.size(); ++m) {
      if (ValidSequence(std::string(s.substr(i, m)) + std::string(len - m, '\x80'))) skip = m;
    }
    out += "\xef\xbf\xbd";
    i += skip;
  }
  return out;
}

struct Gen {
  std::mt19937_64 rng;
  int depth = 0;

  size_t Pick(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); }

  Json Selector(bool for_switch) {
    static const char* kTypes[] = {"int", "uint", "float", "boolean", "string", "hex"};
    Json s = Json::object();
    const std::string type = kTypes[Pick(6)];
    s["type"] = type;
    const bool fixed = type == "int" || type == "uint" || type == "float";
    const size_t mode = fixed ? Pick(2) : Pick(3);  // 0 byte, 1 endbyte, 2 both
    if (mode != 1) s["byte"] = Pick(6);
    if (mode != 0) s["endbyte"] = -static_cast<int>(Pick(5));
    if (mode != 2) {
      size_t len = 1;
      if (type == "float") {
        len = Pick(2) ? 4 : 8;
      } else if (fixed) {
        len = size_t{1} << Pick(4);
      } else {
        len = 1 + Pick(for_switch ? 2 : 5);
      }
      if (len != 1 || Pick(2)) s["bytelength"] = len;
    }
    if (Pick(2)) s["byteorder"] = Pick(2) ? "little" : "big";
    return s;
  }

  Json CaseLabel(const std::string& type) {
    if (type == "int" || type == "uint") {
      static const int kInts[] = {0, 1, 2, -1, 255, 256};
      const int v = kInts[Pick(6)];
      return Pick(4) == 0 ? Json(static_cast<double>(v)) : Json(v);
    }
    if (type == "float") return Pick(2) ? Json(0.0) : Json(1.0);
    if (type == "boolean") return Pick(2) == 1;
    if (type == "string") {
      static const char* kStrings[] = {"", "\x01", "\x01\x02", "\xef\xbf\xbd", "a"};
      return kStrings[Pick(5)];
    }
    static const char* kHex[] = {"00", "01", "0000", "0102", ""};
    return kHex[Pick(5)];
  }

  Json Block() {
    Json block = Json::array();
    const size_t n = Pick(5);
    for (size_t i = 0; i < n; ++i) block.push_back(Statement());
    return block;
  }

  Json Statement() {
    static const char* kAssets[] = {"a", "b", "a.b", "a.c", "b.a.c", "x.y", "a.b.c", "q\"k"};
    static const char* kConstants[] = {"v", "q\"uote", "\xc3\xbc", "\x01", ""};
    const size_t kind = Pick(depth < 3 ? 10 : 8);
    if (kind == 9 || kind == 8) {
      ++depth;
      Json s = Json::object();
      s["switch"] = Selector(true);
      Json on = Json::array();
      const size_t cases = Pick(4);
      for (size_t i = 0; i < cases; ++i) {
        Json c = Json::object();
        c["case"] = CaseLabel(s["switch"]["type"].get<std::string>());
        c["do"] = Block();
        on.push_back(c);
      }
      if (Pick(2)) {
        Json d = Json::object();
        d["default"] = true;
        d["do"] = Block();
        on.insert(on.begin() + static_cast<std::ptrdiff_t>(Pick(on.size() + 1)), d);
      }
      s["on"] = on;
      --depth;
      return s;
    }
    if (kind == 7) return Json{{"comment", "c"}};
    Json m = Json::object();
    m["asset"] = kAssets[Pick(8)];
    if (kind < 2) {
      m["value"] = kConstants[Pick(5)];
    } else {
      m["value"] = Selector(false);
    }
    return m;
  }
};

// The oracle: interprets the generated template with nlohmann objects.
struct Oracle {
  std::span<const std::byte> payload;
  Json out = Json::object();
  std::optional<std::string> error;

  bool Range(const Json& s, int64_t* start, int64_t* end) const {
    const auto n = static_cast<int64_t>(payload.size());
    const bool has_byte = s.contains("byte");
    const bool has_end = s.contains("endbyte");
    const int64_t len = s.value("bytelength", 1);
    if (has_byte && has_end) {
      *start = s["byte"].get<int64_t>();
      *end = n + s["endbyte"].get<int64_t>();
    } else if (has_byte) {
      *start = s["byte"].get<int64_t>();
      *end = *start + len;
    } else {
      *start = n + s["endbyte"].get<int64_t>();
      *end = *start + len;
    }
    return *start >= 0 && *end <= n && *start <= *end;
  }

  static Json Value(const Json& s, std::span<const std::byte> b) {
    const std::string type = s["type"].get<std::string>();
    const bool little = s.value("byteorder", "big") == "little";
    uint64_t u = 0;
    for (size_t i = 0; i < b.size() && i < 8; ++i) {
      const size_t k = little ? b.size() - 1 - i : i;
      u = u << 8 | static_cast<uint8_t>(b[k]);
    }
    if (type == "uint") return u;
    if (type == "int") {
      const int shift = 64 - 8 * static_cast<int>(b.size());
      return static_cast<int64_t>(u << shift) >> shift;
    }
    if (type == "float") {
      if (b.size() == 4) {
        const auto f = std::bit_cast<float>(static_cast<uint32_t>(u));
        if (!std::isfinite(f)) return nullptr;
        char text[64];
        const auto r = std::to_chars(text, text + sizeof text, f, std::chars_format::scientific);
        return std::strtod(std::string(text, r.ptr).c_str(), nullptr);
      }
      const auto d = std::bit_cast<double>(u);
      return std::isfinite(d) ? Json(d) : Json(nullptr);
    }
    if (type == "boolean") {
      for (std::byte x : b) {
        if (x != std::byte{0}) return true;
      }
      return false;
    }
    const std::string raw(reinterpret_cast<const char*>(b.data()), b.size());
    if (type == "string") return DecodeUtf8(raw);
    std::string hex;
    char two[3];
    for (unsigned char c : raw) {
      std::snprintf(two, sizeof two, "%02x", c);
      hex += two;
    }
    return hex;
  }

  void Set(const std::string& path, Json v) {
    Json* cur = &out;
    size_t begin = 0;
    while (true) {
      const size_t dot = path.find('.', begin);
      const std::string seg = path.substr(begin, dot == std::string::npos ? std::string::npos : dot - begin);
      if (dot == std::string::npos) {
        (*cur)[seg] = std::move(v);
        return;
      }
      if (!cur->contains(seg) || !(*cur)[seg].is_object()) (*cur)[seg] = Json::object();
      cur = &(*cur)[seg];
      begin = dot + 1;
    }
  }

  bool Block(const Json& block, const std::string& path) {
    for (size_t i = 0; i < block.size(); ++i) {
      const Json& s = block[i];
      const std::string spath = path + "[" + std::to_string(i) + "]";
      int64_t start = 0;
      int64_t end = 0;
      if (s.contains("asset")) {
        const std::string asset = s["asset"].get<std::string>();
        if (s["value"].is_string()) {
          Set(asset, s["value"]);
          continue;
        }
        if (!Range(s["value"], &start, &end)) {
          error = "Asset path:" + asset + ", Error: can't extract [" + std::to_string(start) + ":" +
                  std::to_string(end) + "] from " + std::to_string(payload.size()) + " bytes";
          return false;
        }
        Set(asset, Value(s["value"], payload.subspan(static_cast<size_t>(start), static_cast<size_t>(end - start))));
      } else if (s.contains("switch")) {
        const Json& sel = s["switch"];
        if (!Range(sel, &start, &end)) {
          error = "Asset path:" + spath + ".switch, Error: can't extract [" + std::to_string(start) + ":" +
                  std::to_string(end) + "] from " + std::to_string(payload.size()) + " bytes";
          return false;
        }
        const Json v = Value(sel, payload.subspan(static_cast<size_t>(start), static_cast<size_t>(end - start)));
        const std::string type = sel["type"].get<std::string>();
        const Json* body = nullptr;
        const Json* fallback = nullptr;
        for (size_t c = 0; c < s["on"].size(); ++c) {
          const Json& entry = s["on"][c];
          if (entry.contains("default")) {
            fallback = &entry;
            continue;
          }
          const Json& label = entry["case"];
          bool match = false;
          if (type == "float") {
            match = !v.is_null() && (sel.value("bytelength", 1) == 4
                                         ? static_cast<float>(label.get<double>()) == static_cast<float>(v.get<double>())
                                         : label.get<double>() == v.get<double>());
          } else if (type == "int" || type == "uint") {
            match = label.is_number_integer()
                        ? (type == "int" ? label.get<int64_t>() == v.get<int64_t>()
                                         : label.get<int64_t>() >= 0 && label.get<uint64_t>() == v.get<uint64_t>())
                        : label.get<double>() == (type == "int" ? static_cast<double>(v.get<int64_t>())
                                                                : static_cast<double>(v.get<uint64_t>()));
          } else {
            match = label == v;
          }
          if (match) {
            body = &entry;
            break;
          }
        }
        if (body == nullptr) body = fallback;
        if (body != nullptr) {
          const size_t index = static_cast<size_t>(body - &s["on"][0]);
          if (!Block((*body)["do"], spath + ".on[" + std::to_string(index) + "].do")) return false;
        }
      }
    }
    return true;
  }
};

// A fresh seed per run, printed; ENERGY_SAVER_SEED=<n> replays one.
uint64_t SpinSeed() {
  if (const char* env = std::getenv("ENERGY_SAVER_SEED")) return std::strtoull(env, nullptr, 10);
  return std::random_device{}();
}

TEST(EnergySaverSpin, RandomTemplatesMatchOracle) {
  const uint64_t seed = SpinSeed();
  std::printf("EnergySaverSpin seed %llu\n", static_cast<unsigned long long>(seed));
  SCOPED_TRACE("seed " + std::to_string(seed));
  Gen gen{std::mt19937_64(seed)};
  std::array<char, 8192> out;
  size_t translated = 0;
  size_t errors = 0;
  for (int t = 0; t < 1500; ++t) {
    Json doc = Json::object();
    doc["sense"] = gen.Block();
    const std::string text = doc.dump();
    auto p = CompileTemplate(text);
    ASSERT_TRUE(p) << p.error() << "\n" << text;
    Translator tr(*p);
    for (int i = 0; i < 40; ++i) {
      std::vector<std::byte> payload(gen.Pick(14));
      for (auto& b : payload) {
        const size_t r = gen.Pick(8);
        b = static_cast<std::byte>(r < 3 ? r : r == 3 ? 0xff : gen.Pick(256));
      }
      Oracle oracle;
      oracle.payload = payload;
      const bool ok = oracle.Block(doc["sense"], "sense");
      auto r = tr.Translate(payload, out);
      ASSERT_EQ(r.has_value(), ok) << text;
      if (!ok) {
        std::array<char, 512> e;
        EXPECT_EQ(std::string(e.data(), FormatError(r.error(), e)), *oracle.error) << text;
        ++errors;
        continue;
      }
      const std::string json(out.data(), *r);
      ASSERT_LE(json.size(), (*p)->MaxOutputSize(payload.size()));
      const Json parsed = Json::parse(json, nullptr, false);
      ASSERT_FALSE(parsed.is_discarded()) << json;
      EXPECT_EQ(parsed, oracle.out) << "template " << text << "\n got " << json << "\n want "
                                    << oracle.out.dump();
      ++translated;
    }
  }
  EXPECT_GT(translated, 5000u);
  EXPECT_GT(errors, 500u);
}

TEST(EnergySaverSpin, MutatedTemplatesNeverCrash) {
  const uint64_t seed = SpinSeed();
  std::printf("EnergySaverSpin mutation seed %llu\n", static_cast<unsigned long long>(seed));
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const std::string_view bases[] = {kTFeat, kTSwitch, kTFull, kTNested, kTLoc, kTBp, kTDeep};
  const std::string_view alphabet = "{}[]\":,.-0123456789abcdefghijklmnopqrstuvwxyz \\";
  std::array<char, 4096> out;
  size_t compiled = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string t(bases[rng() % std::size(bases)]);
    const size_t edits = 1 + rng() % 4;
    for (size_t e = 0; e < edits; ++e) {
      const size_t at = rng() % t.size();
      switch (rng() % 3) {
        case 0: t[at] = alphabet[rng() % alphabet.size()]; break;
        case 1: t.erase(at, 1 + rng() % 3); break;
        default: t.insert(at, 1, alphabet[rng() % alphabet.size()]); break;
      }
      if (t.empty()) t = "{";
    }
    auto p = CompileTemplate(t);
    if (!p) {
      EXPECT_EQ(p.error().find('\n'), std::string::npos);
      EXPECT_NE(p.error().find(": "), std::string::npos);
      continue;
    }
    ++compiled;
    Translator tr(*p);
    std::vector<std::byte> payload(rng() % 20);
    for (auto& b : payload) b = static_cast<std::byte>(rng());
    auto r = tr.Translate(payload, out);
    if (r) {
      EXPECT_FALSE(Json::parse(std::string_view(out.data(), *r), nullptr, false).is_discarded())
          << std::string_view(out.data(), *r);
    }
  }
  EXPECT_GT(compiled, 0u);
}

}  // namespace
}  // namespace coapgate::energysaver
