import COpenSSL

/// A failure in the media relay: ICE, DTLS, SRTP or SDP. `code` is stable; `message` is for people.
public struct MediaError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case badSDP = "bad_sdp"
        case noCommonCodec = "no_common_codec"
        case fingerprintMismatch = "fingerprint_mismatch"
        case dtlsFailed = "dtls_failed"
        case dtlsTimeout = "dtls_timeout"
        case srtpFailed = "srtp_failed"
        case iceFailed = "ice_failed"
        case certificate
        case unavailable
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }

    /// An error with OpenSSL's queued reasons appended (and the queue emptied, since it is per thread).
    static func openSSL(_ code: Code, _ what: String) -> MediaError {
        var reasons: [String] = []
        while case let e = ERR_get_error(), e != 0 {
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(e, &buffer, buffer.count)
            reasons.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return MediaError(code, reasons.isEmpty ? what : "\(what): \(reasons.joined(separator: "; "))")
    }
}
