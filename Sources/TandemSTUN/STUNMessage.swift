import Crypto

/// Why bytes were not a STUN message. The server drops such datagrams without answering.
public struct STUNParseError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable { case tooShort, notSTUN, badLength, truncatedAttribute, badFingerprint }
    public var code: Code
    public var description: String { "STUN parse error: \(code.rawValue)" }
    init(_ code: Code) { self.code = code }
}

/// One attribute as it appears in a message: its type and the range of its value in `STUNMessage.bytes`.
public struct STUNRawAttribute: Hashable, Sendable {
    public var type: UInt16
    public var range: Range<Int>
}

/// A parsed STUN message (RFC 8489 §5–6). Attributes stay in the received bytes so that
/// MESSAGE-INTEGRITY can be checked over exactly what arrived.
public struct STUNMessage: Sendable {
    public var method: STUNMethod
    public var messageClass: STUNClass
    public var transactionID: TransactionID
    /// The attributes before MESSAGE-INTEGRITY (those after it, except MESSAGE-INTEGRITY-SHA256 and
    /// FINGERPRINT, are ignored as RFC 8489 §14.5 says), in order.
    public var attributes: [STUNRawAttribute]
    public var bytes: [UInt8]
    /// Offsets of the integrity and fingerprint attributes' headers, when present.
    public var integrityOffset: Int?
    public var integritySHA256Offset: Int?
    public var hasFingerprint: Bool

    /// True when the first bytes look like a STUN message header (first two bits zero, magic cookie).
    public static func looksLikeSTUN<C: Collection<UInt8>>(_ bytes: C) -> Bool where C.Index == Int {
        guard bytes.count >= 20 else { return false }
        let s = bytes.startIndex
        return bytes[s] & 0xC0 == 0 && UInt32(bigEndianBytes: bytes[(s + 4)..<(s + 8)]) == stunMagicCookie
    }

    /// Parses and validates one whole message: header, lengths, attribute framing and, when present,
    /// FINGERPRINT. Integrity is checked separately because it needs a key.
    public init(parsing input: [UInt8]) throws(STUNParseError) {
        guard input.count >= 20 else { throw STUNParseError(.tooShort) }
        guard Self.looksLikeSTUN(input) else { throw STUNParseError(.notSTUN) }
        let length = Int(input[2]) << 8 | Int(input[3])
        guard length % 4 == 0, length + 20 == input.count else { throw STUNParseError(.badLength) }
        let type = UInt16(input[0]) << 8 | UInt16(input[1])
        method = STUNMethod(rawValue: (type & 0x000F) | (type & 0x00E0) >> 1 | (type & 0x3E00) >> 2)
        messageClass = STUNClass(rawValue: UInt8((type & 0x0010) >> 4 | (type & 0x0100) >> 7))!
        transactionID = TransactionID(bytes: input[8..<20])
        bytes = input
        attributes = []
        integrityOffset = nil
        integritySHA256Offset = nil
        hasFingerprint = false
        var offset = 20
        while offset < input.count {
            guard offset + 4 <= input.count else { throw STUNParseError(.truncatedAttribute) }
            let attrType = UInt16(input[offset]) << 8 | UInt16(input[offset + 1])
            let attrLength = Int(input[offset + 2]) << 8 | Int(input[offset + 3])
            let valueStart = offset + 4
            let next = valueStart + (attrLength + 3) & ~3
            guard valueStart + attrLength <= input.count, next <= input.count else { throw STUNParseError(.truncatedAttribute) }
            if hasFingerprint { throw STUNParseError(.badFingerprint) }  // FINGERPRINT must be last
            switch attrType {
            case STUNAttribute.fingerprint:
                guard attrLength == 4 else { throw STUNParseError(.badFingerprint) }
                let received = UInt32(bigEndianBytes: input[valueStart..<valueStart + 4])
                guard received == Self.fingerprint(of: input, upTo: offset) else { throw STUNParseError(.badFingerprint) }
                hasFingerprint = true
            case STUNAttribute.messageIntegrity where integrityOffset == nil && integritySHA256Offset == nil:
                integrityOffset = offset
            case STUNAttribute.messageIntegritySHA256 where integritySHA256Offset == nil:
                integritySHA256Offset = offset
            default:
                if integrityOffset == nil && integritySHA256Offset == nil {
                    attributes.append(STUNRawAttribute(type: attrType, range: valueStart..<valueStart + attrLength))
                }
            }
            offset = next
        }
    }

    // MARK: Reading attributes

    public func first(_ type: UInt16) -> STUNRawAttribute? { attributes.first { $0.type == type } }

    public func value(_ type: UInt16) -> ArraySlice<UInt8>? { first(type).map { bytes[$0.range] } }

    public func all(_ type: UInt16) -> [ArraySlice<UInt8>] { attributes.filter { $0.type == type }.map { bytes[$0.range] } }

    public func has(_ type: UInt16) -> Bool { attributes.contains { $0.type == type } }

    public func string(_ type: UInt16) -> String? { value(type).map { String(decoding: $0, as: UTF8.self) } }

    public func uint32(_ type: UInt16) -> UInt32? {
        guard let v = value(type), v.count == 4 else { return nil }
        return UInt32(bigEndianBytes: v)
    }

    /// Decodes an XOR-…-ADDRESS value (RFC 8489 §14.2); nil when malformed.
    public func xorAddress(_ value: ArraySlice<UInt8>) -> TransportAddress? {
        Self.decodeXORAddress(value, transactionID: transactionID)
    }

    public func xorAddress(_ type: UInt16) -> TransportAddress? { value(type).flatMap(xorAddress) }

    static func decodeXORAddress(_ value: ArraySlice<UInt8>, transactionID: TransactionID) -> TransportAddress? {
        guard value.count >= 4 else { return nil }
        let s = value.startIndex
        let family = value[s + 1]
        let port = UInt16(bigEndianBytes: value[(s + 2)..<(s + 4)]) ^ UInt16(stunMagicCookie >> 16)
        guard (family == 0x01 && value.count == 8) || (family == 0x02 && value.count == 20) else { return nil }
        let raw = zip(value[(s + 4)...], xorMask(transactionID)).map { $0 ^ $1 }
        return IPAddress(bytes: raw).map { TransportAddress(ip: $0, port: port) }
    }

    /// Unknown comprehension-required attributes, for a 420 answer.
    /// At most `limit` of them, in order: enough for the 420's UNKNOWN-ATTRIBUTES, and a message made of
    /// thousands costs one set lookup each.
    public func unknownRequiredAttributes(known: Set<UInt16>, limit: Int = 32) -> [UInt16] {
        var seen: Set<UInt16> = []
        var unknown: [UInt16] = []
        for a in attributes where STUNAttribute.isComprehensionRequired(a.type) && !known.contains(a.type) && seen.insert(a.type).inserted {
            unknown.append(a.type)
            if unknown.count == limit { break }
        }
        return unknown
    }

    // MARK: Integrity

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1) or MESSAGE-INTEGRITY-SHA256 with `key`. When both are
    /// present, the SHA-256 one is checked (RFC 8489 §14.6). False when neither is present.
    public func verifyIntegrity(key: [UInt8]) -> Bool {
        if let offset = integritySHA256Offset {
            let length = Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
            guard (16...32).contains(length), length % 4 == 0 else { return false }
            let mac = Self.hmacSHA256(bytes, upTo: offset, attributeLength: length, key: key)
            return constantTimeEqual(Array(mac.prefix(length)), Array(bytes[(offset + 4)..<(offset + 4 + length)]))
        }
        if let offset = integrityOffset {
            let length = Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
            guard length == 20 else { return false }
            let mac = Self.hmacSHA1(bytes, upTo: offset, key: key)
            return constantTimeEqual(mac, Array(bytes[(offset + 4)..<(offset + 24)]))
        }
        return false
    }

    public var hasIntegrity: Bool { integrityOffset != nil || integritySHA256Offset != nil }

    /// The bytes before `offset`, with the header's length as if the message ended after an attribute
    /// of `attributeLength` there.
    static func headerPatched(_ bytes: [UInt8], upTo offset: Int, attributeLength: Int) -> [UInt8] {
        var header = Array(bytes[0..<20])
        let length = offset + 4 + attributeLength - 20
        header[2] = UInt8(length >> 8)
        header[3] = UInt8(length & 0xFF)
        return header
    }

    static func hmacSHA1(_ bytes: [UInt8], upTo offset: Int, key: [UInt8]) -> [UInt8] {
        var hmac = HMAC<Insecure.SHA1>(key: SymmetricKey(data: key))
        hmac.update(data: headerPatched(bytes, upTo: offset, attributeLength: 20))
        hmac.update(data: bytes[20..<offset])
        return Array(hmac.finalize())
    }

    static func hmacSHA256(_ bytes: [UInt8], upTo offset: Int, attributeLength: Int, key: [UInt8]) -> [UInt8] {
        var hmac = HMAC<SHA256>(key: SymmetricKey(data: key))
        hmac.update(data: headerPatched(bytes, upTo: offset, attributeLength: attributeLength))
        hmac.update(data: bytes[20..<offset])
        return Array(hmac.finalize())
    }

    static func fingerprint(of bytes: [UInt8], upTo offset: Int) -> UInt32 {
        var crc = CRC32()
        crc.update(headerPatched(bytes, upTo: offset, attributeLength: 4))
        crc.update(bytes[20..<offset])
        return crc.value ^ 0x5354_554E
    }

    static func xorMask(_ id: TransactionID) -> [UInt8] {
        stunMagicCookie.bigEndianBytes + id.bytes
    }
}

/// Compares secrets without an early exit, so timing does not reveal how much of a guess was right.
public func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var diff: UInt8 = 0
    for i in a.indices { diff |= a[i] ^ b[i] }
    return diff == 0
}

extension FixedWidthInteger {
    /// The integer from network-order bytes (as many as given, at most its width).
    package init<C: Collection<UInt8>>(bigEndianBytes bytes: C) {
        self = bytes.reduce(0) { $0 << 8 | Self($1) }
    }

    /// Its bytes in network order.
    package var bigEndianBytes: [UInt8] {
        (0..<Self.bitWidth / 8).map { UInt8(truncatingIfNeeded: self >> (Self.bitWidth - 8 - 8 * $0)) }
    }
}

/// CRC-32 (IEEE 802.3), as FINGERPRINT needs.
struct CRC32 {
    private static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    private var crc: UInt32 = 0xFFFF_FFFF

    mutating func update<C: Collection<UInt8>>(_ bytes: C) {
        var c = crc
        Self.table.withUnsafeBufferPointer { t in
            for b in bytes { c = t[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        }
        crc = c
    }

    var value: UInt32 { crc ^ 0xFFFF_FFFF }
}
