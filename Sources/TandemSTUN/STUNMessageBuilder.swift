/// Writes a STUN message attribute by attribute. Integrity and fingerprint go last, in that order.
public struct STUNMessageBuilder: Sendable {
    public private(set) var bytes: [UInt8]
    public let transactionID: TransactionID

    public init(method: STUNMethod, class messageClass: STUNClass, transactionID: TransactionID, capacity: Int = 128) {
        self.transactionID = transactionID
        let m = method.rawValue
        let c = UInt16(messageClass.rawValue)
        let type = (m & 0x000F) | (m & 0x0070) << 1 | (m & 0x0F80) << 2 | (c & 1) << 4 | (c & 2) << 7
        bytes = []
        bytes.reserveCapacity(capacity)
        bytes.append(UInt8(type >> 8))
        bytes.append(UInt8(type & 0xFF))
        bytes.append(contentsOf: [0, 0] + stunMagicCookie.bigEndianBytes)
        bytes.append(contentsOf: transactionID.bytes)
    }

    /// An answer to `request` with the same method and transaction id.
    public init(answering request: STUNMessage, class messageClass: STUNClass) {
        self.init(method: request.method, class: messageClass, transactionID: request.transactionID)
    }

    public mutating func append<C: Collection<UInt8>>(_ type: UInt16, _ value: C) {
        bytes.append(UInt8(type >> 8))
        bytes.append(UInt8(type & 0xFF))
        bytes.append(UInt8(value.count >> 8))
        bytes.append(UInt8(value.count & 0xFF))
        bytes.append(contentsOf: value)
        let pad = (4 - value.count % 4) % 4
        for _ in 0..<pad { bytes.append(0) }
        setLength()
    }

    public mutating func append(_ type: UInt16, string: String) { append(type, Array(string.utf8)) }

    public mutating func append(_ type: UInt16, uint32 value: UInt32) {
        append(type, value.bigEndianBytes)
    }

    public mutating func append(_ type: UInt16, xorAddress address: TransportAddress) {
        let port = address.port ^ UInt16(stunMagicCookie >> 16)
        let mask = STUNMessage.xorMask(transactionID)
        var value: [UInt8] = [0, address.ip.isV6 ? 0x02 : 0x01, UInt8(port >> 8), UInt8(port & 0xFF)]
        value.append(contentsOf: zip(address.ip.bytes, mask).map { $0 ^ $1 })
        append(type, value)
    }

    public mutating func appendError(_ code: STUNErrorCode, reason: String? = nil) {
        var value: [UInt8] = [0, 0, UInt8(code.rawValue / 100), UInt8(code.rawValue % 100)]
        value.append(contentsOf: (reason ?? code.reason).utf8)
        append(STUNAttribute.errorCode, value)
    }

    public mutating func appendUnknownAttributes(_ types: [UInt16]) {
        append(STUNAttribute.unknownAttributes, types.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] })
    }

    /// MESSAGE-INTEGRITY (HMAC-SHA1 with `key`).
    public mutating func appendIntegrity(key: [UInt8]) {
        let offset = bytes.count
        let mac = STUNMessage.hmacSHA1(bytes, upTo: offset, key: key)
        append(STUNAttribute.messageIntegrity, mac)
    }

    /// MESSAGE-INTEGRITY-SHA256 (full 32 bytes).
    public mutating func appendIntegritySHA256(key: [UInt8]) {
        let offset = bytes.count
        let mac = STUNMessage.hmacSHA256(bytes, upTo: offset, attributeLength: 32, key: key)
        append(STUNAttribute.messageIntegritySHA256, mac)
    }

    public mutating func appendFingerprint() {
        let value = STUNMessage.fingerprint(of: bytes, upTo: bytes.count)
        append(STUNAttribute.fingerprint, uint32: value)
    }

    private mutating func setLength() {
        let length = bytes.count - 20
        bytes[2] = UInt8(length >> 8)
        bytes[3] = UInt8(length & 0xFF)
    }
}
