import TandemMediaCore
import CSRTP

/// The DTLS-SRTP protection profiles the relay speaks, in the order it prefers them. Debian's libsrtp2
/// is built on NSS, where AES-GCM costs about a sixth of AES-CM with HMAC-SHA1 per packet.
public enum SRTPProfile: UInt16, Sendable, CaseIterable {
    /// RFC 7714 AEAD_AES_128_GCM.
    case aeadAES128GCM = 0x0007
    /// RFC 5764 SRTP_AES128_CM_HMAC_SHA1_80.
    case aes128CMSHA1_80 = 0x0001

    /// The `SSL_CTX_set_tlsext_use_srtp` list: the DTLS server picks by its own order.
    static let openSSLList = "SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80"

    public var keyLength: Int { 16 }
    public var saltLength: Int { self == .aeadAES128GCM ? 12 : 14 }
}

/// One direction's master key and salt, as exported from DTLS.
public struct SRTPKeyMaterial: Sendable, Equatable {
    public var profile: SRTPProfile
    /// Master key followed by master salt.
    public var keyAndSalt: [UInt8]

    public init(profile: SRTPProfile, keyAndSalt: [UInt8]) {
        self.profile = profile
        self.keyAndSalt = keyAndSalt
    }
}

/// libsrtp2 wants one `srtp_init` per process before any session.
private let srtpLibraryStatus: srtp_err_status_t = srtp_init()

/// One direction of an SRTP association (libsrtp2 keeps replay state per session, so each leg has one
/// session for what it receives and one for what it sends). Confined to the leg's loop thread.
/// `srtp_dealloc` costs about half a millisecond: release these on the control path, never per packet.
public final class SRTPSession {
    public enum Direction: Sendable { case inbound, outbound }

    /// Bytes a protect call may append (auth tag, MKI): callers keep this much spare capacity.
    public static let maxTrailer = Int(SRTP_MAX_TRAILER_LEN)

    private var session: srtp_t?
    /// libsrtp keeps one stream per SSRC it has authenticated and walks them on every packet: a peer
    /// cycling SSRCs (in RTP or RTCP) would slow every session on the thread. A call needs a handful.
    private let maxStreams: Int
    private var ssrcs: [UInt32] = []

    /// `maxStreams` bounds the SSRCs an inbound session accepts; packets of further SSRCs are refused.
    public init(_ material: SRTPKeyMaterial, direction: Direction, replayWindow: Int = 1024, maxStreams: Int = 8) throws(MediaError) {
        self.maxStreams = direction == .inbound ? maxStreams : .max
        ssrcs.reserveCapacity(min(maxStreams, 16))
        guard srtpLibraryStatus == srtp_err_status_ok else { throw MediaError(.srtpFailed, "libsrtp2 failed to initialise") }
        guard material.keyAndSalt.count == material.profile.keyLength + material.profile.saltLength else {
            throw MediaError(.srtpFailed, "SRTP key material has \(material.keyAndSalt.count) bytes")
        }
        var policy = srtp_policy_t()
        switch material.profile {
        case .aeadAES128GCM:
            srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy.rtp)
            srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy.rtcp)
        case .aes128CMSHA1_80:
            srtp_crypto_policy_set_rtp_default(&policy.rtp)
            srtp_crypto_policy_set_rtcp_default(&policy.rtcp)
        }
        policy.ssrc.type = direction == .inbound ? ssrc_any_inbound : ssrc_any_outbound
        policy.window_size = UInt(max(64, min(replayWindow, 0x7FFF)))
        policy.allow_repeat_tx = 0
        var key = material.keyAndSalt
        let status = key.withUnsafeMutableBufferPointer { buffer -> srtp_err_status_t in
            policy.key = buffer.baseAddress
            return srtp_create(&session, &policy)
        }
        guard status == srtp_err_status_ok else { throw MediaError(.srtpFailed, "srtp_create failed (\(status.rawValue))") }
    }

    deinit {
        if let session { srtp_dealloc(session) }
    }

    /// Encrypts the RTP packet of `length` bytes at `packet` in place; the buffer must have
    /// `maxTrailer` bytes of room after it. Returns the protected length.
    public func protect(_ packet: UnsafeMutableRawPointer, length: Int) throws(MediaError) -> Int {
        try checked(protectedLength(packet, length: length), "srtp_protect")
    }

    /// Decrypts and authenticates an SRTP packet in place; returns the plain length.
    public func unprotect(_ packet: UnsafeMutableRawPointer, length: Int) throws(MediaError) -> Int {
        try checked(plainLength(packet, length: length), "srtp_unprotect")
    }

    public func protectRTCP(_ packet: UnsafeMutableRawPointer, length: Int) throws(MediaError) -> Int {
        try checked(protectedLength(packet, length: length, rtcp: true), "srtp_protect_rtcp")
    }

    public func unprotectRTCP(_ packet: UnsafeMutableRawPointer, length: Int) throws(MediaError) -> Int {
        try checked(plainLength(packet, length: length, rtcp: true), "srtp_unprotect_rtcp")
    }

    /// The packet path's protect: nil on failure, with nothing allocated (garbage, replays and late
    /// packets fail here all the time).
    @inline(__always)
    public func protectedLength(_ packet: UnsafeMutableRawPointer, length: Int, rtcp: Bool = false) -> Int? {
        var n = Int32(truncatingIfNeeded: length)
        let status = rtcp ? srtp_protect_rtcp(session, packet, &n) : srtp_protect(session, packet, &n)
        return status == srtp_err_status_ok ? Int(n) : nil
    }

    /// The packet path's unprotect: nil when the packet does not authenticate, is a replay, or comes from
    /// an SSRC past `maxStreams` (whose stream is forgotten again).
    @inline(__always)
    public func plainLength(_ packet: UnsafeMutableRawPointer, length: Int, rtcp: Bool = false) -> Int? {
        var n = Int32(truncatingIfNeeded: length)
        let status = rtcp ? srtp_unprotect_rtcp(session, packet, &n) : srtp_unprotect(session, packet, &n)
        guard status == srtp_err_status_ok else { return nil }
        // An authenticated packet has its SSRC in the clear: at 8 in RTP, at 4 (the sender's) in RTCP.
        let ssrc = UInt32(bigEndian: packet.loadUnaligned(fromByteOffset: rtcp ? 4 : 8, as: UInt32.self))
        if !ssrcs.contains(ssrc) {
            guard ssrcs.count < maxStreams else {
                _ = srtp_remove_stream(session, ssrc.bigEndian)
                return nil
            }
            ssrcs.append(ssrc)
        }
        return Int(n)
    }

    private func checked(_ length: Int?, _ what: String) throws(MediaError) -> Int {
        guard let length else { throw MediaError(.srtpFailed, "\(what) failed") }
        return length
    }
}

extension SRTPSession {
    /// Convenience for tests and the control path: protects a copy of `packet`.
    public func protect(_ packet: [UInt8], rtcp: Bool = false) throws(MediaError) -> [UInt8] {
        try transform(packet, extra: Self.maxTrailer) { p, n throws(MediaError) in rtcp ? try protectRTCP(p, length: n) : try protect(p, length: n) }
    }

    public func unprotect(_ packet: [UInt8], rtcp: Bool = false) throws(MediaError) -> [UInt8] {
        try transform(packet, extra: 0) { p, n throws(MediaError) in rtcp ? try unprotectRTCP(p, length: n) : try unprotect(p, length: n) }
    }

    private func transform(
        _ packet: [UInt8], extra: Int, _ body: (UnsafeMutableRawPointer, Int) throws(MediaError) -> Int
    ) throws(MediaError) -> [UInt8] {
        var buffer = packet + [UInt8](repeating: 0, count: extra)
        let count = packet.count
        let result: Result<Int, MediaError> = buffer.withUnsafeMutableBytes { raw in
            do throws(MediaError) { return .success(try body(raw.baseAddress!, count)) } catch { return .failure(error) }
        }
        buffer.removeLast(buffer.count - (try result.get()))
        return buffer
    }
}
