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
}
