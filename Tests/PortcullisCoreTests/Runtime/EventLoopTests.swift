import Foundation
import Synchronization
import XCTest
@testable import PortcullisRuntime

final class EventLoopTests: XCTestCase {
    final class Recorder: LoopHandler {
        var events: [UInt32] = []
        func ready(_ events: UInt32) { self.events.append(events) }
    }

    func testTimerQueueOrdersReschedulesAndCancels() {
        var queue = TimerQueue()
        var fired: [String] = []
        let a = LoopTimer { fired.append("a") }, b = LoopTimer { fired.append("b") }, c = LoopTimer { fired.append("c") }
        queue.schedule(a, at: 30)
        queue.schedule(b, at: 10)
        queue.schedule(c, at: 20)
        queue.schedule(b, at: 40)  // moved later: its first entry is stale
        queue.cancel(c)
        XCTAssertEqual(queue.nextDeadline(), 30)
        for timer in queue.popDue(now: 35) { timer.action() }
        XCTAssertEqual(fired, ["a"])
        XCTAssertFalse(c.isScheduled)
        for timer in queue.popDue(now: 100) { timer.action() }
        XCTAssertEqual(fired, ["a", "b"])
        XCTAssertTrue(queue.isEmpty)
        XCTAssertNil(queue.nextDeadline())
    }

    func testCancelledTimersMayBeReleasedAndReschedulingDoesNotGrowTheHeap() {
        var queue = TimerQueue()
        do {
            let gone = LoopTimer {}
            queue.schedule(gone, at: 5)
            queue.cancel(gone)
        }  // released by its owner while its entry is still in the heap
        XCTAssertNil(queue.nextDeadline())
        let busy = LoopTimer {}
        for i in 0..<100_000 { queue.schedule(busy, at: UInt64(30_000 + i)) }
        XCTAssertLessThanOrEqual(queue.storedEntries, 130, "stale entries are compacted away")
        XCTAssertEqual(queue.nextDeadline(), 129_999)
        XCTAssertEqual(queue.popDue(now: 200_000).count, 1)
        XCTAssertTrue(queue.isEmpty)
    }

    func testReadinessReachesTheHandlerUntilDeregistered() throws {
        let loop = EventLoop(index: 0)
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        defer { close(fds[0]); close(fds[1]) }
        let recorder = Recorder()
        try loop.register(fds[0], events: EventLoop.readable, handler: recorder)
        loop.runOnce(maxWaitMs: 0)
        XCTAssertTrue(recorder.events.isEmpty)
        var byte: UInt8 = 1
        XCTAssertEqual(write(fds[1], &byte, 1), 1)
        loop.runOnce(maxWaitMs: 1000)
        XCTAssertEqual(recorder.events.count, 1)
        XCTAssertNotEqual(recorder.events[0] & EventLoop.readable, 0)
        loop.deregister(fds[0])
        loop.runOnce(maxWaitMs: 0)
        XCTAssertEqual(recorder.events.count, 1, "no event after deregistering")
    }

    func testTimersFireAndPostedTasksRunOnTheLoop() {
        let loop = EventLoop(index: 0)
        var fired = 0
        let timer = LoopTimer { fired += 1 }
        loop.schedule(timer, afterNanos: 20_000_000)
        let started = EventLoop.monotonicNanos()
        while fired == 0 { loop.runOnce(maxWaitMs: 1000) }
        XCTAssertGreaterThanOrEqual(EventLoop.monotonicNanos() - started, 19_000_000)
        let ran = Atomic<Bool>(false)
        let thread = Thread { loop.post { ran.store(true, ordering: .relaxed) } }
        thread.start()
        let deadline = Date().addingTimeInterval(5)
        // The post wakes the loop from an indefinite wait.
        while !ran.load(ordering: .relaxed) && Date() < deadline { loop.runOnce(maxWaitMs: -1) }
        XCTAssertTrue(ran.load(ordering: .relaxed))
    }

    func testControlChannelPassesDescriptors() throws {
        let (master, worker) = try ControlChannel.pair()
        defer { close(master.fd); close(worker.fd) }
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        XCTAssertTrue(worker.send("handoff", fds: [fds[1]]))
        close(fds[1])
        guard case .message(let words, let passed)? = master.receive() else { return XCTFail("no message") }
        XCTAssertEqual(words, ["handoff"])
        XCTAssertEqual(passed.count, 1)
        // The passed descriptor is the pipe's write end: what goes in comes out of the read end.
        var byte: UInt8 = 7
        XCTAssertEqual(write(passed[0], &byte, 1), 1)
        close(passed[0])
        var got: UInt8 = 0
        XCTAssertEqual(read(fds[0], &got, 1), 1)
        XCTAssertEqual(got, 7)
        close(fds[0])
        XCTAssertNil(master.receive(), "nothing more waiting")
        XCTAssertTrue(master.send("prepare 2 /tmp/x.json"))
        guard case .message(let prepare, _)? = worker.receive() else { return XCTFail("no prepare") }
        XCTAssertEqual(prepare, ["prepare", "2", "/tmp/x.json"])
    }
}
