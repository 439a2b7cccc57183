import TandemSFU
import Testing

@Suite("Client-side pacing and retries")
struct PacingTests {
    func ms(_ n: Int) -> Duration { .milliseconds(n) }

    @Test func aBurstGoesAtOnceThenRequestsQueueAtTheRate() {
        var p = RequestPacer(perSecond: 20)
        let waits = (0..<23).map { _ in p.reserve(now: .zero) }
        #expect(waits.prefix(20).allSatisfy { $0 == .zero })
        #expect(Array(waits.suffix(3)) == [ms(50), ms(100), ms(150)])
        // Time refills the bucket; the queue ahead is still owed first.
        #expect(p.reserve(now: ms(100)) == ms(100))
        #expect(p.reserve(now: .seconds(5)) == .zero)
    }

    /// The queue is bounded by the longest wait a caller accepts: past it a request is refused at once and
    /// reserves nothing, so the ones after it are not pushed back.
    @Test func aQueueLongerThanTheWaitAllowedRefusesAtOnce() {
        var p = RequestPacer(perSecond: 2, burst: 1)
        let waits = (0..<6).map { _ in p.reserve(now: .zero, maxWait: .seconds(2)) }
        #expect(waits == [.zero, ms(500), ms(1000), ms(1500), ms(2000), nil])
        #expect(p.reserve(now: .zero, maxWait: .seconds(2)) == nil)
        // Half a second later one place has come free, at the end of the same queue.
        #expect(p.reserve(now: ms(500), maxWait: .seconds(2)) == ms(2000))
        #expect(p.reserve(now: ms(500), maxWait: .seconds(2)) == nil)
    }

    @Test func deletesAtTwoASecond() {
        var p = RequestPacer(perSecond: 2)
        #expect([p.reserve(now: .zero), p.reserve(now: .zero), p.reserve(now: .zero), p.reserve(now: ms(500))] == [.zero, .zero, ms(500), ms(500)])
    }

    @Test(arguments: [
        // tries so far, the failure, the wait before the next try (nil: give up)
        (1, RetryPolicy.Failure.serverError, Duration?.some(.milliseconds(500))),
        (2, .serverError, .milliseconds(1000)),
        (3, .serverError, nil),
        (1, .rateLimited(retryAfter: nil), .milliseconds(500)),
        (4, .rateLimited(retryAfter: nil), .seconds(4)),
        (5, .rateLimited(retryAfter: nil), nil),
        (1, .rateLimited(retryAfter: .seconds(3)), .seconds(3)),  // the service's wait when longer
        (2, .rateLimited(retryAfter: .seconds(60)), .seconds(8)),  // within the cap
        (1, .final, nil),
    ])
    func backoff(tries: Int, failure: RetryPolicy.Failure, expected: Duration?) {
        #expect(RetryPolicy().delay(after: tries, failure) == expected)
    }
}
