// WolfsslIo: the callbacks through which wolfSSL does its I/O and PSK lookup for a
// DtlsEndpoint, in place of its socket code. Receive hands wolfSSL the datagram being fed
// (one per read, as from a UDP socket), Send passes wolfSSL's output to Transport::Send (and
// to the endpoint's FlightCapture), Psk asks the endpoint's PskLookup. Each finds its
// DtlsSession through the I/O context pointer set when the session was created.
//
// Thread contract: called only from inside the wolfSSL calls a DtlsEndpoint makes, so on the
// shard's thread, inside the endpoint's HeapScope.
#pragma once

struct WOLFSSL;

namespace coapgate::dtls {

struct WolfsslIo {
  static int Receive(WOLFSSL* ssl, char* buffer, int size, void* context) noexcept;
  static int Send(WOLFSSL* ssl, char* buffer, int size, void* context) noexcept;
  static unsigned int Psk(WOLFSSL* ssl, const char* identity, unsigned char* key,
                          unsigned int max_key_length) noexcept;
};

}  // namespace coapgate::dtls
