#include "common/csv_reader.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace coapgate {
namespace {

using Status = CsvReader::Status;

struct Record {
  size_t line;
  std::vector<std::string> fields;
  bool operator==(const Record&) const = default;
};

std::vector<Record> ReadAll(std::string_view text) {
  CsvReader reader(text);
  std::vector<Record> out;
  for (Status s; (s = reader.Next()) == Status::kRecord;) {
    Record r{reader.line(), {}};
    for (size_t i = 0; i < reader.field_count(); ++i) r.fields.emplace_back(reader.field(i));
    out.push_back(std::move(r));
  }
  return out;
}

// The error and its line, for text the reader must refuse.
std::pair<std::string, size_t> ErrorOf(std::string_view text) {
  CsvReader reader(text);
  for (Status s; (s = reader.Next()) != Status::kEnd;) {
    if (s == Status::kError) return {std::string(reader.error()), reader.error_line()};
  }
  ADD_FAILURE() << "accepted: " << text;
  return {};
}

TEST(CsvReader, PlainFieldsWithLfOrCrlf) {
  const std::vector<Record> want = {{1, {"a", "b", "c"}}, {2, {"1", "", "3"}}};
  EXPECT_EQ(ReadAll("a,b,c\n1,,3\n"), want);
  EXPECT_EQ(ReadAll("a,b,c\r\n1,,3\r\n"), want);
  EXPECT_EQ(ReadAll("a,b,c\r\n1,,3"), want);  // the last record needs no line end
}

TEST(CsvReader, EmptyTextHasNoRecords) {
  EXPECT_TRUE(ReadAll("").empty());
  EXPECT_TRUE(ReadAll("\n\r\n").empty());
  CsvReader reader("");
  EXPECT_EQ(reader.Next(), Status::kEnd);
}

TEST(CsvReader, BlankLinesAreSkippedAndLinesStillCounted) {
  EXPECT_EQ(ReadAll("h\n\n\r\nx\n"), (std::vector<Record>{{1, {"h"}}, {4, {"x"}}}));
}

TEST(CsvReader, TrailingCommaIsAnEmptyLastField) {
  EXPECT_EQ(ReadAll("a,\n"), (std::vector<Record>{{1, {"a", ""}}}));
}

TEST(CsvReader, QuotedFieldsHoldCommasQuotesAndLineBreaks) {
  EXPECT_EQ(ReadAll("\"a,b\",\"say \"\"hi\"\"\",\"\"\n"),
            (std::vector<Record>{{1, {"a,b", "say \"hi\"", ""}}}));
  // A record spanning lines is reported on the line it starts; the next one after it.
  EXPECT_EQ(ReadAll("h\n\"one\ntwo\",x\r\ny,\"3\r\n4\"\nz\n"),
            (std::vector<Record>{{1, {"h"}}, {2, {"one\ntwo", "x"}}, {4, {"y", "3\r\n4"}},
                                 {6, {"z"}}}));
}

TEST(CsvReader, SeveralEscapedFieldsInOneRecordKeepTheirOwnText) {
  EXPECT_EQ(ReadAll("\"a\"\"\",b,\"\"\"c\"\n"),
            (std::vector<Record>{{1, {"a\"", "b", "\"c"}}}));
}

TEST(CsvReader, ByteOrderMarkIsNotPartOfTheFirstField) {
  EXPECT_EQ(ReadAll("\xEF\xBB\xBFiccid,ip\n"), (std::vector<Record>{{1, {"iccid", "ip"}}}));
}

TEST(CsvReader, FindFieldNamesAHeaderColumn) {
  CsvReader reader("ip,\"iccid\",psk\n");
  ASSERT_EQ(reader.Next(), Status::kRecord);
  EXPECT_EQ(reader.FindField("iccid"), 1u);
  EXPECT_EQ(reader.FindField("psk"), 2u);
  EXPECT_EQ(reader.FindField("imsi"), CsvReader::kNoField);
}

TEST(CsvReader, RefusesMalformedQuotingWithTheLine) {
  EXPECT_EQ(ErrorOf("h\nab\"c\n"),
            std::make_pair(std::string("'\"' inside an unquoted field (quote the whole field, "
                                       "doubling the '\"')"),
                           size_t{2}));
  EXPECT_EQ(ErrorOf("h\n\"ab\"c\n"),
            std::make_pair(std::string("unexpected text after a closing quote"), size_t{2}));
  // Unterminated: the line where the quoted field opened, not the end of the text.
  EXPECT_EQ(ErrorOf("h\n\"ab\n\n\n"),
            std::make_pair(std::string("unterminated quoted field"), size_t{2}));
  // A lone CR after a closing quote is text, not a line end.
  EXPECT_EQ(ErrorOf("\"a\"\rb\n").first, "unexpected text after a closing quote");
}

TEST(FileLineMessage, FormatsThePosition) {
  EXPECT_EQ(FileLineMessage("devices.csv", 7, "ip: duplicate"), "devices.csv:7: ip: duplicate");
}

}  // namespace
}  // namespace coapgate
