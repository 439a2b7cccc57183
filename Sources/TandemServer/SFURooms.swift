import Logging
import Prometheus
import TandemSFU

/// Deletes the SFU rooms of ended sessions, and keeps the ones whose delete failed for the cleanup job
/// to try again. A session that starts again under the same id claims its room first, which stops a
/// delete that has not been sent (deletes are paced at the service's low limit and may queue).
actor SFURooms {
    let sfu: any SFUProvider
    let metrics: ServerMetrics
    let logger: Logger
    private var deleting: [String: Task<Void, Never>] = [:]
    private var failed: Set<String> = []

    init(sfu: any SFUProvider, metrics: ServerMetrics, logger: Logger) {
        self.sfu = sfu
        self.metrics = metrics
        self.logger = logger
    }

    /// The session ended: delete its room, once `after` (work that may still be making it) is done.
    func delete(_ name: String, after: (@Sendable () async -> Void)? = nil) {
        failed.remove(name)
        guard deleting[name] == nil else { return }
        deleting[name] = Task {
            await after?()
            await self.run(name)
        }
    }

    /// A session is about to use this room: a pending delete of it is called off (or, when it has been
    /// sent already, waited for, so that the room is made again after it).
    func claim(_ name: String) async {
        failed.remove(name)
        guard let task = deleting[name] else { return }
        task.cancel()
        await task.value
    }

    /// Tries the failed deletes again (from the periodic cleanup).
    func retryFailed() {
        for name in failed { delete(name) }
    }

    /// Rooms whose delete failed, waiting for the cleanup job.
    var failedDeletes: Int { failed.count }

    private func run(_ name: String) async {
        do throws(SFUError) {
            try await sfu.deleteRoom(named: name)
            metrics.sfuDeletes[true]?.increment()
        } catch {
            if !Task.isCancelled {
                failed.insert(name)
                metrics.sfuDeletes[false]?.increment()
                metrics.sfuErrors[error.code]?.increment()
                logger.warning("SFU room delete failed; the cleanup job tries again", metadata: ["room": "\(name)", "error": "\(error)"])
            }
        }
        deleting[name] = nil
    }
}
