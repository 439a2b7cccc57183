import TandemProtocol
import TandemStore

/// What crosses a cluster link between the node that holds a participant's socket (the entry) and the
/// node that serves the session (the home). Frames and messages travel as the bytes the client and
/// the session wrote, so neither end parses or encodes them again.
enum LinkMessage: Sendable, Equatable {
    // Entry → home.
    /// A join through the entry's socket `socket`: its text, and what the entry checked of its token.
    case join(socket: UInt64, identity: String?, name: String?, raw: [UInt8])
    case message(socket: UInt64, raw: [UInt8])
    /// The client's socket is gone.
    case closed(socket: UInt64)
    /// The entry refused a message of the participant (rate limit, malformed).
    case reject(socket: UInt64, code: ErrorCode, message: String)
    /// The entry asks the session to close the socket after what it sent.
    case close(socket: UInt64, code: UInt16, reason: String)
    /// An operator's switch made through the entry's admin API (`socket` numbers the request).
    case switchProvider(socket: UInt64, session: String, provider: String)
    /// The admin API's view of a session, asked through the entry (`socket` numbers the request).
    case viewSession(socket: UInt64, session: String)
    // Home → entry.
    case joined(socket: UInt64, participant: ParticipantID)
    /// The join was refused (`retry`: the session closed meanwhile, try again).
    case refused(socket: UInt64, code: ErrorCode, message: String, retry: Bool)
    /// A framed server message for the socket.
    case frame(socket: UInt64, bytes: [UInt8])
    case closeSocket(socket: UInt64, code: UInt16, reason: String)
    /// The answer to `switchProvider`: the session's provider and epoch after it, or why not.
    case switched(socket: UInt64, Result<ProviderState, ProtocolError>)
    /// The answer to `viewSession`: the view as the admin API's JSON, empty when the home has none.
    case sessionView(socket: UInt64, json: [UInt8])

    struct DecodeError: Error, Equatable {}

    var socket: UInt64 {
        switch self {
        case .join(let s, _, _, _), .message(let s, _), .closed(let s), .reject(let s, _, _), .close(let s, _, _), .joined(let s, _),
            .refused(let s, _, _, _), .frame(let s, _), .closeSocket(let s, _, _), .switchProvider(let s, _, _), .switched(let s, _),
            .viewSession(let s, _), .sessionView(let s, _):
            s
        }
    }

    func encoded() -> [UInt8] {
        var w = Writer()
        switch self {
        case let .join(socket, identity, name, raw):
            w.head(1, socket)
            w.optional(identity)
            w.optional(name)
            w.bytes(raw)
        case let .message(socket, raw):
            w.head(2, socket)
            w.bytes(raw)
        case .closed(let socket):
            w.head(3, socket)
        case let .reject(socket, code, message):
            w.head(4, socket)
            w.string(code.rawValue)
            w.string(message)
        case let .close(socket, code, reason):
            w.head(5, socket)
            w.u16(code)
            w.string(reason)
        case let .switchProvider(socket, session, provider):
            w.head(6, socket)
            w.string(session)
            w.string(provider)
        case let .viewSession(socket, session):
            w.head(7, socket)
            w.string(session)
        case let .sessionView(socket, json):
            w.head(16, socket)
            w.bytes(json)
        case let .switched(socket, result):
            w.head(15, socket)
            switch result {
            case .success(let state):
                w.out.append(1)
                w.string(state.name.rawValue)
                w.bytes(Array(String(state.epoch).utf8))
            case .failure(let error):
                w.out.append(0)
                w.string(error.code.rawValue)
                w.string(error.message)
            }
        case let .joined(socket, participant):
            w.head(11, socket)
            w.string(participant.rawValue)
        case let .refused(socket, code, message, retry):
            w.head(12, socket)
            w.string(code.rawValue)
            w.string(message)
            w.out.append(retry ? 1 : 0)
        case let .frame(socket, bytes):
            w.head(13, socket)
            w.bytes(bytes)
        case let .closeSocket(socket, code, reason):
            w.head(14, socket)
            w.u16(code)
            w.string(reason)
        }
        return w.out
    }

    static func decode(_ bytes: [UInt8]) throws(DecodeError) -> LinkMessage {
        var r = Reader(data: bytes)
        let type = try r.u8()
        let socket = try r.u64()
        let message: LinkMessage
        switch type {
        case 1: message = .join(socket: socket, identity: try r.optional(), name: try r.optional(), raw: try r.bytes())
        case 2: message = .message(socket: socket, raw: try r.bytes())
        case 3: message = .closed(socket: socket)
        case 4: message = .reject(socket: socket, code: try r.code(), message: try r.string())
        case 5: message = .close(socket: socket, code: try r.u16(), reason: try r.string())
        case 6: message = .switchProvider(socket: socket, session: try r.string(), provider: try r.string())
        case 7: message = .viewSession(socket: socket, session: try r.string())
        case 16: message = .sessionView(socket: socket, json: try r.bytes())
        case 15:
            switch try r.u8() {
            case 1:
                guard let name = ProviderName(rawValue: try r.string()), let epoch = Int(try r.string()) else { throw DecodeError() }
                message = .switched(socket: socket, .success(ProviderState(name: name, epoch: epoch)))
            case 0: message = .switched(socket: socket, .failure(ProtocolError(try r.code(), try r.string())))
            default: throw DecodeError()
            }
        case 11: message = .joined(socket: socket, participant: ParticipantID(try r.string()))
        case 12: message = .refused(socket: socket, code: try r.code(), message: try r.string(), retry: try r.u8() == 1)
        case 13: message = .frame(socket: socket, bytes: try r.bytes())
        case 14: message = .closeSocket(socket: socket, code: try r.u16(), reason: try r.string())
        default: throw DecodeError()
        }
        guard r.offset == bytes.count else { throw DecodeError() }
        return message
    }

    private struct Writer {
        var out: [UInt8] = []

        mutating func head(_ type: UInt8, _ socket: UInt64) {
            out.append(type)
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: socket >> UInt64(shift))) }
        }

        mutating func u16(_ v: UInt16) { out += [UInt8(v >> 8), UInt8(truncatingIfNeeded: v)] }

        mutating func bytes(_ b: [UInt8]) {
            let n = UInt32(b.count)
            out += [UInt8(n >> 24), UInt8(truncatingIfNeeded: n >> 16), UInt8(truncatingIfNeeded: n >> 8), UInt8(truncatingIfNeeded: n)]
            out += b
        }

        mutating func string(_ s: String) { bytes(Array(s.utf8)) }

        mutating func optional(_ s: String?) {
            guard let s else { return out.append(0) }
            out.append(1)
            string(s)
        }
    }

    private struct Reader {
        let data: [UInt8]
        var offset = 0

        mutating func u8() throws(DecodeError) -> UInt8 {
            guard offset < data.count else { throw DecodeError() }
            defer { offset += 1 }
            return data[offset]
        }

        mutating func u16() throws(DecodeError) -> UInt16 { UInt16(try u8()) << 8 | UInt16(try u8()) }

        mutating func u64() throws(DecodeError) -> UInt64 {
            var v: UInt64 = 0
            for _ in 0..<8 { v = v << 8 | UInt64(try u8()) }
            return v
        }

        mutating func bytes() throws(DecodeError) -> [UInt8] {
            var n = 0
            for _ in 0..<4 { n = n << 8 | Int(try u8()) }
            guard n <= data.count - offset else { throw DecodeError() }
            defer { offset += n }
            return Array(data[offset..<(offset + n)])
        }

        mutating func string() throws(DecodeError) -> String {
            let b = try bytes()
            guard let s = String(validating: b, as: UTF8.self) else { throw DecodeError() }
            return s
        }

        mutating func optional() throws(DecodeError) -> String? {
            switch try u8() {
            case 0: return nil
            case 1: return try string()
            default: throw DecodeError()
            }
        }

        mutating func code() throws(DecodeError) -> ErrorCode {
            guard let code = ErrorCode(rawValue: try string()) else { throw DecodeError() }
            return code
        }
    }
}
