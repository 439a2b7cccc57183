import TandemProtocol

/// What happened to a frame handed to a socket.
enum SendOutcome: Equatable {
    case sent
    /// The socket is closing or gone; the frame stays in the resume log only.
    case refused
    /// The socket was too far behind: this frame was refused and the socket is now closed (1008).
    case closedSlow
}

/// Where a participant's frames go: its WebSocket on this node (``Connection``), or its socket on
/// another node, reached over the cluster link (``BridgedSocket``).
protocol ParticipantSocket: AnyObject, Sendable {
    /// Unique among this node's sockets.
    var id: UInt64 { get }
    @discardableResult
    func send(_ frame: [UInt8]) -> SendOutcome
    /// Closes the socket with `code` after what was sent before. The first request wins.
    func close(code: UInt16, reason: String)
}

/// Where a joined socket's traffic goes: its live session on this node, or the session's home node.
protocol SessionEntry: Sendable {
    /// A decoded message of the participant (`raw` is its text); false if the session has ended.
    func message(_ id: ParticipantID, socket: UInt64, _ message: ClientMessage, raw: [UInt8]) -> Bool
    func socketClosed(_ id: ParticipantID, socket: UInt64)
    /// The socket layer refused a message of the participant.
    func reject(_ id: ParticipantID, socket: UInt64, _ error: ProtocolError)
    /// Closes the socket through its session (after what the session sent); false if it has ended.
    func close(_ id: ParticipantID, socket: UInt64, code: UInt16, reason: String) -> Bool
}

extension LiveSession: SessionEntry {
    func message(_ id: ParticipantID, socket: UInt64, _ message: ClientMessage, raw: [UInt8]) -> Bool {
        post(.message(id, connection: socket, message))
    }

    func socketClosed(_ id: ParticipantID, socket: UInt64) { post(.socketClosed(id, connection: socket)) }

    func reject(_ id: ParticipantID, socket: UInt64, _ error: ProtocolError) { post(.reject(id, connection: socket, error)) }

    func close(_ id: ParticipantID, socket: UInt64, code: UInt16, reason: String) -> Bool {
        post(.close(id, connection: socket, code: code, reason: reason))
    }
}
