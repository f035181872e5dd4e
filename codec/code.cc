#include "codec/code.h"

namespace coapgate::codec {

std::string_view CodeName(uint8_t c) noexcept {
  switch (c) {
    case code::kEmpty: return "Empty";
    case code::kGet: return "GET";
    case code::kPost: return "POST";
    case code::kPut: return "PUT";
    case code::kDelete: return "DELETE";
    case MakeCode(2, 1): return "Created";
    case MakeCode(2, 2): return "Deleted";
    case MakeCode(2, 3): return "Valid";
    case code::kChanged: return "Changed";
    case code::kContent: return "Content";
    case code::kBadRequest: return "Bad Request";
    case code::kUnauthorized: return "Unauthorized";
    case code::kBadOption: return "Bad Option";
    case MakeCode(4, 3): return "Forbidden";
    case code::kNotFound: return "Not Found";
    case code::kMethodNotAllowed: return "Method Not Allowed";
    case MakeCode(4, 6): return "Not Acceptable";
    case code::kPreconditionFailed: return "Precondition Failed";
    case code::kRequestEntityTooLarge: return "Request Entity Too Large";
    case MakeCode(4, 15): return "Unsupported Content-Format";
    case code::kInternalServerError: return "Internal Server Error";
    case MakeCode(5, 1): return "Not Implemented";
    case MakeCode(5, 2): return "Bad Gateway";
    case code::kServiceUnavailable: return "Service Unavailable";
    case MakeCode(5, 4): return "Gateway Timeout";
    case code::kProxyingNotSupported: return "Proxying Not Supported";
    default: return "";
  }
}

}  // namespace coapgate::codec
