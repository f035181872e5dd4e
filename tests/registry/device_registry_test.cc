#include "registry/device_registry.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace coapgate::registry {
namespace {

constexpr std::string_view kHeader = "iccid,imsi,ip,status,psk,psk_format\n";
constexpr std::string_view kName = "devices.csv";

// Parses `text` and fails the test with the loader's message if it is refused.
std::shared_ptr<const DeviceRegistry> MustParse(std::string_view text) {
  auto registry = DeviceRegistry::ParseCsv(text, kName);
  EXPECT_TRUE(registry) << registry.error().message;
  return registry ? *registry : nullptr;
}

std::string ParseError(std::string_view text) {
  auto registry = DeviceRegistry::ParseCsv(text, kName);
  EXPECT_FALSE(registry) << "accepted:\n" << text;
  return registry ? std::string() : registry.error().message;
}

net::IpAddress Ip(std::string_view text) {
  auto ip = net::IpAddress::Parse(text);
  EXPECT_TRUE(ip) << text;
  return ip.value_or(net::IpAddress());
}

std::string WriteTempFile(std::string_view file_name, std::string_view contents) {
  const std::string path = testing::TempDir() + std::string(file_name);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
  out.close();
  EXPECT_TRUE(out) << path;
  return path;
}

// The i-th generated ICCID: 89882806660000000000 + i (more than 64 bits, hence text).
std::string Iccid(size_t i) {
  char digits[32];
  std::snprintf(digits, sizeof(digits), "8988280666%010zu", i);
  return digits;
}

// n devices with distinct 20-digit ICCIDs, 15-digit IMSIs and addresses, alternating IPv4
// and IPv6 so that both families share the index.
std::string GeneratedCsv(size_t n, std::string_view psk) {
  std::string text(kHeader);
  text.reserve(n * 80);
  for (size_t i = 0; i < n; ++i) {
    text += Iccid(i);
    text += ',';
    text += std::to_string(901405100000000ULL + i);
    text += ',';
    char ip[64];
    if (i % 2 == 0) {
      std::snprintf(ip, sizeof(ip), "10.%zu.%zu.%zu", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff);
    } else {
      std::snprintf(ip, sizeof(ip), "2001:db8::%zx:%zx", i >> 16, i & 0xffff);
    }
    text += ip;
    text += ",active,";
    text += psk;
    text += ",\n";
  }
  return text;
}

TEST(DeviceRegistry, LoadsIpv4Ipv6AndDtlsOnlyDevices) {
  const auto registry = MustParse(std::string(kHeader) +
                                  "89882806660000000001,901405100000001,100.91.200.24,active,,\n"
                                  "89882806660000000002,,2001:db8::1,active,secret,string\n"
                                  "89882806660000000003,901405100000003,,active,00ff,hex\n");
  ASSERT_NE(registry, nullptr);
  ASSERT_EQ(registry->size(), 3u);

  const DeviceView v4 = registry->Get(0);
  EXPECT_EQ(v4.iccid, "89882806660000000001");
  EXPECT_EQ(v4.imsi, "901405100000001");
  ASSERT_TRUE(v4.ip);
  EXPECT_EQ(v4.ip->ToString(), "100.91.200.24");
  EXPECT_TRUE(v4.active);
  EXPECT_TRUE(v4.psk.empty());
  EXPECT_EQ(v4.psk_format, PskFormat::kString);

  const DeviceView v6 = registry->Get(1);
  EXPECT_TRUE(v6.imsi.empty());
  ASSERT_TRUE(v6.ip);
  EXPECT_EQ(v6.ip->ToString(), "2001:db8::1");
  EXPECT_EQ(v6.psk, "secret");
  EXPECT_EQ(v6.psk_format, PskFormat::kString);

  const DeviceView dtls_only = registry->Get(2);
  EXPECT_FALSE(dtls_only.ip);
  EXPECT_EQ(dtls_only.psk, "00ff");
  EXPECT_EQ(dtls_only.psk_format, PskFormat::kHex);
  // Not in the IP index: the unspecified address it is stored as must not find it.
  EXPECT_FALSE(registry->FindByIp(net::IpAddress()));
}

TEST(DeviceRegistry, UnquotesFieldsWithCommasAndEscapedQuotes) {
  const auto registry = MustParse(std::string(kHeader) +
                                  "89882806660000000001,,10.0.0.1,active,\"a,b\"\"c\"\"\",string\n"
                                  "\"89882806660000000002\",\"\",\"10.0.0.2\",\"active\",\"\"\"\","
                                  "\"string\"\n"
                                  "89882806660000000003,,10.0.0.3,active,\"two\nlines\",\n");
  ASSERT_NE(registry, nullptr);
  ASSERT_EQ(registry->size(), 3u);
  EXPECT_EQ(registry->Get(0).psk, "a,b\"c\"");
  EXPECT_EQ(registry->Get(1).iccid, "89882806660000000002");
  EXPECT_EQ(registry->Get(1).psk, "\"");
  EXPECT_TRUE(registry->Get(1).active);
  EXPECT_EQ(registry->Get(2).psk, "two\nlines");
}

TEST(DeviceRegistry, AcceptsCrlfLineEnds) {
  const auto registry = MustParse(
      "iccid,imsi,ip,status,psk,psk_format\r\n"
      "89882806660000000001,,10.0.0.1,active,key,\r\n"
      "\r\n"
      "89882806660000000002,,10.0.0.2,inactive,\"k\r\n\",string\r\n");
  ASSERT_NE(registry, nullptr);
  ASSERT_EQ(registry->size(), 2u);
  EXPECT_EQ(registry->Get(0).psk, "key");
  EXPECT_EQ(registry->Get(1).psk, "k\r\n");  // inside quotes the line end is data
  EXPECT_EQ(registry->Get(1).psk_format, PskFormat::kString);
}

TEST(DeviceRegistry, ACarriageReturnNotEndingALineIsData) {
  const auto registry =
      MustParse(std::string(kHeader) + "89882806660000000001,,10.0.0.1,active,a\rb\r,\r\n");
  ASSERT_NE(registry, nullptr);
  ASSERT_EQ(registry->size(), 1u);
  EXPECT_EQ(registry->Get(0).psk, "a\rb\r");
  EXPECT_EQ(registry->Get(0).psk_format, PskFormat::kString);
}

TEST(DeviceRegistry, SkipsBlankLinesAndAcceptsNoFinalNewline) {
  const auto registry = MustParse(std::string("\n\n") + std::string(kHeader) + "\n" +
                                  "89882806660000000001,,10.0.0.1,active,,\n\n\n"
                                  "89882806660000000002,,10.0.0.2,active,,");
  ASSERT_NE(registry, nullptr);
  EXPECT_EQ(registry->size(), 2u);
  EXPECT_TRUE(registry->FindByIp(Ip("10.0.0.2")));
}

TEST(DeviceRegistry, AcceptsShuffledColumnsAndIgnoresUnknownOnes) {
  const auto registry = MustParse(
      "psk_format,template,status,ip,psk,iccid,imsi\n"
      "hex,\"{\"\"a\"\":1}\",ACTIVE,10.0.0.1,c0ffee,89882806660000000001,90140510000\n");
  ASSERT_NE(registry, nullptr);
  ASSERT_EQ(registry->size(), 1u);
  const DeviceView d = registry->Get(0);
  EXPECT_EQ(d.iccid, "89882806660000000001");
  EXPECT_EQ(d.imsi, "90140510000");
  EXPECT_EQ(d.ip, Ip("10.0.0.1"));
  EXPECT_TRUE(d.active);
  EXPECT_EQ(d.psk, "c0ffee");
  EXPECT_EQ(d.psk_format, PskFormat::kHex);
}

TEST(DeviceRegistry, SkipsUtf8ByteOrderMark) {
  const auto registry = MustParse("\xEF\xBB\xBF" + std::string(kHeader) +
                                  "89882806660000000001,,10.0.0.1,active,,\n");
  ASSERT_NE(registry, nullptr);
  EXPECT_EQ(registry->size(), 1u);
}

TEST(DeviceRegistry, HeaderOnlyIsAnEmptyRegistry) {
  const auto registry = MustParse(kHeader);
  ASSERT_NE(registry, nullptr);
  EXPECT_EQ(registry->size(), 0u);
  EXPECT_TRUE(registry->empty());
  EXPECT_FALSE(registry->FindByIp(Ip("10.0.0.1")));
  EXPECT_FALSE(registry->FindByIccid("89882806660000000001"));
}

TEST(DeviceRegistry, FindByIpHitAndMiss) {
  const auto registry = MustParse(std::string(kHeader) +
                                  "89882806660000000001,,10.0.0.1,active,,\n"
                                  "89882806660000000002,,2001:db8::2,active,,\n"
                                  "89882806660000000003,,,active,,\n");
  ASSERT_NE(registry, nullptr);
  auto v4 = registry->FindByIp(Ip("10.0.0.1"));
  ASSERT_TRUE(v4);
  EXPECT_EQ(v4->iccid, "89882806660000000001");
  // The v4-mapped form is the same address.
  auto mapped = registry->FindByIp(Ip("::ffff:10.0.0.1"));
  ASSERT_TRUE(mapped);
  EXPECT_EQ(mapped->iccid, "89882806660000000001");
  auto v6 = registry->FindByIp(Ip("2001:db8:0:0::2"));
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->iccid, "89882806660000000002");
  EXPECT_FALSE(registry->FindByIp(Ip("10.0.0.3")));
  EXPECT_FALSE(registry->FindByIp(Ip("2001:db8::1")));
}

TEST(DeviceRegistry, FindByIccidHitAndMiss) {
  const auto registry = MustParse(std::string(kHeader) +
                                  "89882806660000000001,,10.0.0.1,active,,\n"
                                  "8988280666000000000222,,,active,pw,\n");
  ASSERT_NE(registry, nullptr);
  auto hit = registry->FindByIccid("8988280666000000000222");
  ASSERT_TRUE(hit);
  EXPECT_FALSE(hit->ip);
  EXPECT_EQ(hit->psk, "pw");
  EXPECT_TRUE(registry->FindByIccid("89882806660000000001"));
  EXPECT_FALSE(registry->FindByIccid("89882806660000000002"));
  EXPECT_FALSE(registry->FindByIccid("8988280666000000000"));  // a prefix
  EXPECT_FALSE(registry->FindByIccid(""));
}

TEST(DeviceRegistry, OnlyActiveInAnyCaseIsActive) {
  const auto registry = MustParse(std::string(kHeader) +
                                  "89882806660000000001,,10.0.0.1,Active,,\n"
                                  "89882806660000000002,,10.0.0.2,inactive,,\n"
                                  "89882806660000000003,,10.0.0.3,,,\n"
                                  "89882806660000000004,,10.0.0.4,suspended,,\n"
                                  "89882806660000000005,,10.0.0.5,active ,,\n");
  ASSERT_NE(registry, nullptr);
  EXPECT_TRUE(registry->FindByIp(Ip("10.0.0.1"))->active);
  EXPECT_FALSE(registry->FindByIp(Ip("10.0.0.2"))->active);
  EXPECT_FALSE(registry->FindByIp(Ip("10.0.0.3"))->active);
  EXPECT_FALSE(registry->FindByIp(Ip("10.0.0.4"))->active);
  EXPECT_FALSE(registry->FindByIp(Ip("10.0.0.5"))->active);
}

TEST(DeviceRegistry, AcceptsFieldLengthBoundaries) {
  const std::string psk64(64, 'k');
  const auto registry =
      MustParse(std::string(kHeader) + "898828066600000001,90140,10.0.0.1,active," + psk64 +
                ",string\n"
                "8988280666000000000001,901405100000001,10.0.0.2,active,AbCdEf09,HEX\n");
  ASSERT_NE(registry, nullptr);
  EXPECT_EQ(registry->Get(0).psk, psk64);
  EXPECT_EQ(registry->Get(1).psk_format, PskFormat::kHex);
}

struct BadCsv {
  const char* test_name;
  std::string text;
  std::string message;  // the whole error, exactly
};

void PrintTo(const BadCsv& bad, std::ostream* out) { *out << bad.test_name; }

class DeviceRegistryRejects : public testing::TestWithParam<BadCsv> {};

TEST_P(DeviceRegistryRejects, WithOneLineNamingLineAndColumn) {
  const std::string error = ParseError(GetParam().text);
  EXPECT_EQ(error, GetParam().message);
  EXPECT_EQ(error.find('\n'), std::string::npos);
}

std::string Row(std::string_view iccid, std::string_view imsi, std::string_view ip,
                std::string_view psk, std::string_view psk_format) {
  return std::string(iccid) + "," + std::string(imsi) + "," + std::string(ip) + ",active," +
         std::string(psk) + "," + std::string(psk_format) + "\n";
}

const std::string kGood1 = Row("89882806660000000001", "", "10.0.0.1", "", "");
const std::string kGood2 = Row("89882806660000000002", "", "10.0.0.2", "", "");

INSTANTIATE_TEST_SUITE_P(
    Validation, DeviceRegistryRejects,
    testing::Values(
        BadCsv{"EmptyFile", "", "devices.csv: empty file: no header row"},
        BadCsv{"OnlyBlankLines", "\n\r\n\n", "devices.csv: empty file: no header row"},
        BadCsv{"MissingColumn", "iccid,imsi,ip,status,psk\n" + kGood1,
               "devices.csv:1: header: missing required column(s): psk_format (the header must "
               "name iccid, imsi, ip, status, psk, psk_format)"},
        BadCsv{"NoHeader", kGood1 + kGood2,
               "devices.csv:1: header: missing required column(s): iccid, imsi, ip, status, "
               "psk, psk_format (the header must name iccid, imsi, ip, status, psk, "
               "psk_format)"},
        BadCsv{"ColumnNamesAreCaseSensitive", "ICCID,imsi,ip,status,psk,psk_format\n",
               "devices.csv:1: header: missing required column(s): iccid (the header must name "
               "iccid, imsi, ip, status, psk, psk_format)"},
        BadCsv{"DuplicateColumn", "iccid,imsi,ip,status,psk,psk_format,ip\n",
               "devices.csv:1: header: column ip appears twice"},
        BadCsv{"TooFewFields", std::string(kHeader) + kGood1 + "89882806660000000002,,10.0.0.2\n",
               "devices.csv:3: expected 6 fields as in the header, found 3"},
        BadCsv{"TooManyFields", std::string(kHeader) + kGood1 + "1,2,3,4,5,6,7\n",
               "devices.csv:3: expected 6 fields as in the header, found 7"},
        BadCsv{"IccidTooShort", std::string(kHeader) + Row("89882806660000001", "", "", "", ""),
               "devices.csv:2: iccid: must be 18 to 22 digits: 89882806660000001"},
        BadCsv{"IccidTooLong",
               std::string(kHeader) + Row("89882806660000000000001", "", "", "", ""),
               "devices.csv:2: iccid: must be 18 to 22 digits: 89882806660000000000001"},
        BadCsv{"IccidNotDigits", std::string(kHeader) + Row("8988280666000000000F", "", "", "", ""),
               "devices.csv:2: iccid: must be 18 to 22 digits: 8988280666000000000F"},
        BadCsv{"IccidEmpty", std::string(kHeader) + kGood1 + Row("", "", "10.0.0.9", "", ""),
               "devices.csv:3: iccid: must be 18 to 22 digits: (empty)"},
        BadCsv{"ImsiTooShort",
               std::string(kHeader) + Row("89882806660000000001", "9014", "", "", ""),
               "devices.csv:2: imsi: must be empty or 5 to 15 digits: 9014"},
        BadCsv{"ImsiTooLong",
               std::string(kHeader) + Row("89882806660000000001", "9014051000000001", "", "", ""),
               "devices.csv:2: imsi: must be empty or 5 to 15 digits: 9014051000000001"},
        BadCsv{"ImsiNotDigits",
               std::string(kHeader) + Row("89882806660000000001", "90140-51", "", "", ""),
               "devices.csv:2: imsi: must be empty or 5 to 15 digits: 90140-51"},
        BadCsv{"IpOutOfRange",
               std::string(kHeader) + kGood1 + kGood2 + "\n\n" +
                   Row("89882806660000000003", "", "10.0.0.300", "", ""),
               "devices.csv:6: ip: not an IPv4 or IPv6 address: 10.0.0.300"},
        BadCsv{"IpHostName",
               std::string(kHeader) + Row("89882806660000000001", "", "device.example", "", ""),
               "devices.csv:2: ip: not an IPv4 or IPv6 address: device.example"},
        BadCsv{"IpWithSpace",
               std::string(kHeader) + Row("89882806660000000001", "", " 10.0.0.1", "", ""),
               "devices.csv:2: ip: not an IPv4 or IPv6 address:  10.0.0.1"},
        BadCsv{"PskTooLong",
               std::string(kHeader) +
                   Row("89882806660000000001", "", "", std::string(65, 's'), "string"),
               "devices.csv:2: psk: longer than 64 bytes (65 bytes)"},
        BadCsv{"UnknownPskFormat",
               std::string(kHeader) + Row("89882806660000000001", "", "", "k", "base64"),
               "devices.csv:2: psk_format: must be empty, string or hex: base64"},
        BadCsv{"HexPskOddLength",
               std::string(kHeader) + Row("89882806660000000001", "", "", "abc", "hex"),
               "devices.csv:2: psk: psk_format is hex but psk is not a non-empty, even-length "
               "run of hex digits (3 characters)"},
        BadCsv{"HexPskNotHex",
               std::string(kHeader) + Row("89882806660000000001", "", "", "secret", "hex"),
               "devices.csv:2: psk: psk_format is hex but psk is not a non-empty, even-length "
               "run of hex digits (6 characters)"},
        BadCsv{"HexPskEmpty", std::string(kHeader) + Row("89882806660000000001", "", "", "", "hex"),
               "devices.csv:2: psk: psk_format is hex but psk is not a non-empty, even-length "
               "run of hex digits (0 characters)"},
        BadCsv{"DuplicateIccid",
               std::string(kHeader) + kGood1 + kGood2 +
                   Row("89882806660000000001", "", "10.0.0.3", "", ""),
               "devices.csv:4: iccid: duplicate: 89882806660000000001, first on line 2"},
        BadCsv{"DuplicateIp",
               std::string(kHeader) + kGood1 + "\n" + kGood2 +
                   Row("89882806660000000003", "", "10.0.0.2", "", ""),
               "devices.csv:5: ip: duplicate: 10.0.0.2 (two devices cannot share an address), "
               "first on line 4"},
        BadCsv{"DuplicateIpInMappedForm",
               std::string(kHeader) + kGood1 +
                   Row("89882806660000000003", "", "::ffff:10.0.0.1", "", ""),
               "devices.csv:3: ip: duplicate: ::ffff:10.0.0.1 (two devices cannot share an "
               "address), first on line 2"},
        BadCsv{"LineNumbersCountLinesInsideQuotes",
               std::string(kHeader) +
                   Row("89882806660000000001", "", "10.0.0.1", "\"a\nb\nc\"", "") +
                   Row("89882806660000000002", "", "10.0.0.x", "", ""),
               "devices.csv:5: ip: not an IPv4 or IPv6 address: 10.0.0.x"},
        BadCsv{"ControlCharactersAreEscaped",
               std::string(kHeader) + Row("89882806660000000001", "", "\"10.0.0.1\n\"", "", ""),
               "devices.csv:2: ip: not an IPv4 or IPv6 address: 10.0.0.1\\x0a"},
        BadCsv{"LongValuesAreTruncated",
               std::string(kHeader) + Row(std::string(60, '1'), "", "", "", ""),
               "devices.csv:2: iccid: must be 18 to 22 digits: " + std::string(48, '1') + "..."},
        BadCsv{"UnterminatedQuote",
               std::string(kHeader) + kGood1 + "89882806660000000002,,10.0.0.2,active,\"abc,\n",
               "devices.csv:3: unterminated quoted field"},
        BadCsv{"TextAfterClosingQuote",
               std::string(kHeader) + "89882806660000000001,,\"10.0.0.1\"x,active,,\n",
               "devices.csv:2: unexpected text after a closing quote"},
        BadCsv{"QuoteInUnquotedField",
               std::string(kHeader) + "89882806660000000001,,10.0.0.1,active,ab\"c,\n",
               "devices.csv:2: '\"' inside an unquoted field (quote the whole field, doubling "
               "the '\"')"}),
    [](const testing::TestParamInfo<BadCsv>& param_info) { return param_info.param.test_name; });

TEST(DeviceRegistry, ErrorsNeverShowThePsk) {
  const std::string secret = "hunter2-" + std::string(60, 'x');
  const std::string error =
      ParseError(std::string(kHeader) + Row("89882806660000000001", "", "", secret, ""));
  EXPECT_EQ(error.find("hunter2"), std::string::npos) << error;
  const std::string hex_error =
      ParseError(std::string(kHeader) + Row("89882806660000000001", "", "", "hunter2", "hex"));
  EXPECT_EQ(hex_error.find("hunter2"), std::string::npos) << hex_error;
}

TEST(DeviceRegistry, LoadCsvFileReadsAFile) {
  const std::string path =
      WriteTempFile("device_registry_test_ok.csv", std::string(kHeader) + kGood1 + kGood2);
  auto registry = DeviceRegistry::LoadCsvFile(path);
  ASSERT_TRUE(registry) << registry.error().message;
  EXPECT_EQ((*registry)->size(), 2u);
  std::remove(path.c_str());
}

TEST(DeviceRegistry, LoadCsvFileNamesThePathInErrors) {
  const std::string path =
      WriteTempFile("device_registry_test_bad.csv", std::string(kHeader) + kGood1 + kGood1);
  auto registry = DeviceRegistry::LoadCsvFile(path);
  ASSERT_FALSE(registry);
  EXPECT_EQ(registry.error().message, path + ":3: iccid: duplicate: 89882806660000000001, first on line 2");
  EXPECT_EQ(registry.error().kind, coapgate::ErrorKind::kBadInput);
  std::remove(path.c_str());
}

TEST(DeviceRegistry, LoadCsvFileReportsAMissingFile) {
  const std::string path = testing::TempDir() + "device_registry_test_does_not_exist.csv";
  auto registry = DeviceRegistry::LoadCsvFile(path);
  ASSERT_FALSE(registry);
  EXPECT_EQ(registry.error().message, path + ": cannot open: No such file or directory");
  EXPECT_EQ(registry.error().kind, coapgate::ErrorKind::kEnvironment);
}

TEST(DeviceRegistry, LoadCsvFileRefusesADirectory) {
  auto registry = DeviceRegistry::LoadCsvFile(testing::TempDir());
  ASSERT_FALSE(registry);
  EXPECT_EQ(registry.error().message, testing::TempDir() + ": not a regular file");
}

TEST(DeviceRegistry, LoadCsvFileOfAnEmptyFile) {
  const std::string path = WriteTempFile("device_registry_test_empty.csv", "");
  auto registry = DeviceRegistry::LoadCsvFile(path);
  ASSERT_FALSE(registry);
  EXPECT_EQ(registry.error().message, path + ": empty file: no header row");
  std::remove(path.c_str());
}

TEST(DeviceRegistry, ViewsOutliveTheLoaderButNotTheSnapshot) {
  std::string text = std::string(kHeader) +
                     Row("89882806660000000001", "90140", "10.0.0.1", "\"k\"\"ey\"", "string");
  auto registry = MustParse(text);
  ASSERT_NE(registry, nullptr);
  // Nothing in the snapshot refers to the text it came from.
  std::fill(text.begin(), text.end(), '#');
  const auto device = registry->FindByIccid("89882806660000000001");
  ASSERT_TRUE(device);
  EXPECT_EQ(device->imsi, "90140");
  EXPECT_EQ(device->psk, "k\"ey");
}

TEST(DeviceRegistry, ConcurrentReadersShareOneSnapshot) {
  const auto registry = MustParse(GeneratedCsv(1000, ""));
  ASSERT_NE(registry, nullptr);
  std::vector<std::thread> readers;
  std::vector<size_t> found(4, 0);
  for (size_t t = 0; t < found.size(); ++t) {
    readers.emplace_back([&registry, &found, t] {
      for (size_t i = 0; i < registry->size(); ++i) {
        const DeviceView d = registry->Get(i);
        found[t] +=
            registry->FindByIp(*d.ip).has_value() && registry->FindByIccid(d.iccid).has_value();
      }
    });
  }
  for (std::thread& reader : readers) reader.join();
  for (size_t count : found) EXPECT_EQ(count, 1000u);
}

// Untrusted-input hygiene: mutated files (bytes replaced by CSV-significant or arbitrary
// characters) are accepted or refused with one line, never crash or read out of bounds.
TEST(DeviceRegistry, SpinMutatedFiles) {
  const std::string valid = std::string(kHeader) +
                            Row("89882806660000000001", "90140", "10.0.0.1", "\"a,\"\"b\"", "") +
                            Row("89882806660000000002", "", "2001:db8::1", "00ff", "hex") +
                            Row("89882806660000000003", "", "", "", "");
  constexpr std::string_view kInteresting = ",\"\r\n0a:.";
  std::mt19937 random(1234);
  size_t accepted = 0;
  for (int round = 0; round < 20000; ++round) {
    std::string text = valid;
    const int mutations = 1 + static_cast<int>(random() % 4);
    for (int m = 0; m < mutations; ++m) {
      const size_t at = random() % text.size();
      switch (random() % 3) {
        case 0:
          text[at] = kInteresting[random() % kInteresting.size()];
          break;
        case 1:
          text[at] = static_cast<char>(random());
          break;
        default:
          text.erase(at, 1 + random() % 3);
          break;
      }
      if (text.empty()) break;
    }
    auto registry = DeviceRegistry::ParseCsv(text, kName);
    if (registry) {
      ++accepted;
      for (size_t i = 0; i < (*registry)->size(); ++i) {
        const DeviceView d = (*registry)->Get(i);
        ASSERT_TRUE((*registry)->FindByIccid(d.iccid));
        if (d.ip) {
          ASSERT_TRUE((*registry)->FindByIp(*d.ip));
        }
      }
    } else {
      ASSERT_EQ(registry.error().message.rfind("devices.csv", 0), 0u) << registry.error().message;
      ASSERT_EQ(registry.error().message.find('\n'), std::string::npos) << registry.error().message;
    }
  }
  EXPECT_GT(accepted, 0u);  // some mutations land in ignored or free-form text
}

void ExpectEveryDeviceFound(const DeviceRegistry& registry, size_t n) {
  ASSERT_EQ(registry.size(), n);
  for (size_t i = 0; i < n; ++i) {
    const std::string iccid = Iccid(i);
    const auto by_iccid = registry.FindByIccid(iccid);
    ASSERT_TRUE(by_iccid) << iccid;
    ASSERT_EQ(by_iccid->imsi, std::to_string(901405100000000ULL + i));
    ASSERT_TRUE(by_iccid->ip);
    const auto by_ip = registry.FindByIp(*by_iccid->ip);
    ASSERT_TRUE(by_ip) << by_iccid->ip->ToString();
    ASSERT_EQ(by_ip->iccid, iccid);
    ASSERT_EQ(registry.Get(i).iccid, iccid);  // file order
  }
  EXPECT_FALSE(registry.FindByIccid(Iccid(n)));
  EXPECT_FALSE(registry.FindByIp(Ip("192.0.2.1")));
}

TEST(DeviceRegistry, Generated100kDevicesAreAllFoundWithin200BytesEach) {
  constexpr size_t kDevices = 100'000;
  const auto registry = MustParse(GeneratedCsv(kDevices, ""));
  ASSERT_NE(registry, nullptr);
  ExpectEveryDeviceFound(*registry, kDevices);
  EXPECT_LE(registry->MemoryBytes() / registry->size(), 200u) << registry->MemoryBytes();
}

TEST(DeviceRegistry, LongestFieldsStayWithin200BytesEach) {
  // 20-digit ICCID, 15-digit IMSI and a 64-byte PSK: the most text a device of this
  // generator can carry (22-digit ICCIDs would add 2 bytes).
  constexpr size_t kDevices = 100'000;
  const auto registry = MustParse(GeneratedCsv(kDevices, std::string(64, 'p')));
  ASSERT_NE(registry, nullptr);
  ExpectEveryDeviceFound(*registry, kDevices);
  EXPECT_LE(registry->MemoryBytes() / registry->size(), 200u) << registry->MemoryBytes();
}

TEST(DeviceRegistry, IndexesAreRightSizedWhenTheFileHasManyBlankLines) {
  // Reservations assume one device per line; blank lines and DTLS-only devices must not leave
  // the snapshot holding tables sized for them.
  std::string text(kHeader);
  text += std::string(100'000, '\n');
  text += Row("89882806660000000001", "", "", "", "");
  const auto registry = MustParse(text);
  ASSERT_NE(registry, nullptr);
  EXPECT_LT(registry->MemoryBytes(), 1024u);
  EXPECT_TRUE(registry->FindByIccid("89882806660000000001"));
  EXPECT_FALSE(registry->FindByIp(net::IpAddress()));
}

// A second backend (a database table) feeds rows to the Builder without knowing their count:
// the tables grow from a low guess, keep every device findable, and end right-sized.
TEST(DeviceRegistryBuilder, GrowsPastALowGuessAndFindsEveryDevice) {
  constexpr size_t kDevices = 20'000;
  DeviceRegistry::Builder builder("table devices", /*expected_rows=*/1,
                                  /*expected_text_bytes=*/0);
  for (size_t i = 0; i < kDevices; ++i) {
    const std::string iccid = Iccid(i);
    const std::string ip = "10." + std::to_string((i >> 16) & 0xff) + "." +
                           std::to_string((i >> 8) & 0xff) + "." + std::to_string(i & 0xff);
    auto added = builder.Add({iccid, "", ip, "active", "", ""}, i + 1);
    ASSERT_TRUE(added) << added.error();
  }
  const auto registry = std::move(builder).Finish();
  ASSERT_EQ(registry->size(), kDevices);
  for (size_t i = 0; i < kDevices; ++i) {
    const auto device = registry->FindByIccid(Iccid(i));
    ASSERT_TRUE(device) << i;
    ASSERT_TRUE(device->ip);
    EXPECT_EQ(registry->FindByIp(*device->ip)->iccid, Iccid(i));
  }
  EXPECT_LE(registry->MemoryBytes() / registry->size(), 200u) << registry->MemoryBytes();
}

// The same rows give the same snapshot and the same messages as the CSV file: the rules live
// in one place.
TEST(DeviceRegistryBuilder, RefusesWhatTheCsvLoaderRefusesWithTheSameMessage) {
  const std::string csv_error = ParseError(std::string(kHeader) +
                                           "89882806660000000001,,10.0.0.1,active,,\n"
                                           "89882806660000000002,,10.0.0.1,active,,\n");
  DeviceRegistry::Builder builder(kName, 2, 64);
  ASSERT_TRUE(builder.Add({"89882806660000000001", "", "10.0.0.1", "active", "", ""}, 2));
  auto duplicate = builder.Add({"89882806660000000002", "", "10.0.0.1", "active", "", ""}, 3);
  ASSERT_FALSE(duplicate);
  EXPECT_EQ(duplicate.error(), csv_error);
  EXPECT_NE(csv_error.find("first on line 2"), std::string::npos) << csv_error;

  auto bad_key = builder.Add({"89882806660000000003", "", "", "active", "zz-secret", "hex"}, 4);
  ASSERT_FALSE(bad_key);
  EXPECT_NE(bad_key.error().find("devices.csv:4: psk:"), std::string::npos) << bad_key.error();
  EXPECT_EQ(bad_key.error().find("zz-secret"), std::string::npos) << "the key must not show";

  // A refused row left nothing behind: the device of line 3 is not there.
  const auto registry = std::move(builder).Finish();
  EXPECT_EQ(registry->size(), 1u);
  EXPECT_FALSE(registry->FindByIccid("89882806660000000002"));
}

}  // namespace
}  // namespace coapgate::registry
