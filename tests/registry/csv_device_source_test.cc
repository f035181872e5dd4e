#include "registry/csv_device_source.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace coapgate::registry {
namespace {

std::string TempPath(std::string_view name) {
  const std::string path = testing::TempDir() + std::string(name);
  std::filesystem::remove_all(path);
  return path;
}

TEST(CsvDeviceSource, AMissingFileIsAnEmptyRegistryAndSaysSo) {
  CsvDeviceSource source(TempPath("csv_source_missing.csv"));
  auto loaded = source.Load();
  ASSERT_TRUE(loaded) << loaded.error().message;
  EXPECT_TRUE(loaded->missing);
  ASSERT_NE(loaded->devices, nullptr);
  EXPECT_EQ(loaded->devices->size(), 0u);
}

TEST(CsvDeviceSource, EveryLoadReadsTheFileAgain) {
  const std::string path = TempPath("csv_source_reload.csv");
  CsvDeviceSource source(path);
  EXPECT_EQ(source.name(), path);
  {
    std::ofstream(path) << "iccid,imsi,ip,status,psk,psk_format\n"
                           "89882806660000000001,,10.0.0.1,active,,\n";
  }
  auto first = source.Load();
  ASSERT_TRUE(first) << first.error().message;
  EXPECT_FALSE(first->missing);
  EXPECT_EQ(first->devices->size(), 1u);
  {
    std::ofstream(path, std::ios::app) << "89882806660000000002,,10.0.0.2,active,,\n";
  }
  auto second = source.Load();
  ASSERT_TRUE(second) << second.error().message;
  EXPECT_EQ(second->devices->size(), 2u);
  EXPECT_EQ(first->devices->size(), 1u) << "a loaded snapshot never changes";
}

TEST(CsvDeviceSource, AnInvalidFileIsBadInputNamingTheLine) {
  const std::string path = TempPath("csv_source_bad.csv");
  { std::ofstream(path) << "iccid,imsi,ip,status,psk,psk_format\n12,,,active,,\n"; }
  auto loaded = CsvDeviceSource(path).Load();
  ASSERT_FALSE(loaded);
  EXPECT_EQ(loaded.error().kind, ErrorKind::kBadInput);
  EXPECT_NE(loaded.error().message.find(path + ":2: iccid"), std::string::npos)
      << loaded.error().message;
}

TEST(CsvDeviceSource, ADirectoryIsAnErrorNamingThePath) {
  const std::string path = TempPath("csv_source_dir");
  std::filesystem::create_directory(path);
  auto loaded = CsvDeviceSource(path).Load();
  ASSERT_FALSE(loaded);
  EXPECT_NE(loaded.error().message.find(path), std::string::npos) << loaded.error().message;
}

}  // namespace
}  // namespace coapgate::registry
