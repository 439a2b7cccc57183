import NIOConcurrencyHelpers
import TandemProtocol

/// On a session's home node, the socket of a participant whose WebSocket is on another node (the
/// entry): its frames go over the cluster link, which the entry writes to the real socket.
final class BridgedSocket: ParticipantSocket {
    let id: UInt64
    /// The socket's id on the entry node.
    let entrySocket: UInt64
    private let link: any LinkSender
    private let state = NIOLockedValueBox((closing: false, gone: false))

    init(id: UInt64, entrySocket: UInt64, link: any LinkSender) {
        self.id = id
        self.entrySocket = entrySocket
        self.link = link
    }

    @discardableResult
    func send(_ frame: [UInt8]) -> SendOutcome {
        guard state.withLockedValue({ !$0.closing && !$0.gone }) else { return .refused }
        return link.send(.frame(socket: entrySocket, bytes: frame)) ? .sent : .refused
    }

    func close(code: UInt16, reason: String) {
        let first = state.withLockedValue { s -> Bool in
            guard !s.closing, !s.gone else { return false }
            s.closing = true
            return true
        }
        if first { _ = link.send(.closeSocket(socket: entrySocket, code: code, reason: reason)) }
    }

    /// The entry's socket is gone, or the link.
    func finish() { state.withLockedValue { $0.gone = true } }
}

/// Queues a message on a cluster link; false when the link is down.
protocol LinkSender: Sendable {
    func send(_ message: LinkMessage) -> Bool
}

/// On the entry node, a joined socket whose session lives on another node: its traffic goes over the
/// cluster link to the home.
struct RemoteEntry: SessionEntry {
    let link: DialedLink

    func message(_ id: ParticipantID, socket: UInt64, _ message: ClientMessage, raw: [UInt8]) -> Bool {
        link.send(.message(socket: socket, raw: raw))
    }

    func socketClosed(_ id: ParticipantID, socket: UInt64) {
        link.forget(socket)
        _ = link.send(.closed(socket: socket))
    }

    func reject(_ id: ParticipantID, socket: UInt64, _ error: ProtocolError) {
        _ = link.send(.reject(socket: socket, code: error.code, message: error.message))
    }

    func close(_ id: ParticipantID, socket: UInt64, code: UInt16, reason: String) -> Bool {
        link.send(.close(socket: socket, code: code, reason: reason))
    }
}
