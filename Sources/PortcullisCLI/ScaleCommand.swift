import ArgumentParser
import Foundation
import PortcullisPool

struct ScaleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scale", abstract: "Set the number of worker processes (N), or change it (+N / -N).")

    @OptionGroup var options: ConfigOption
    // Captured unparsed so that "-1" is a value, not an unknown option.
    @Argument(parsing: .allUnrecognized, help: "Desired worker processes (1...256), or +N / -N.") var target: [String] = []

    func run() throws {
        guard target.count == 1, let parsed = MasterControl.ScaleTarget(target[0]) else {
            throw ValidationError("give one worker count N (1...256) or a change +N / -N")
        }
        if case .absolute(let n) = parsed, !(1...MasterControl.maxWorkers).contains(n) {
            throw ValidationError("workers must be 1...\(MasterControl.maxWorkers)")
        }
        do {
            let reached = try MasterControl(configPath: options.config).scale(parsed)
            print("scaled to \(reached) workers")
        } catch {
            throw error.exit()
        }
    }
}
