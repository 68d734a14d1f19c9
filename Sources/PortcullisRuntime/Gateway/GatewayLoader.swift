import PortcullisCore
import PortcullisPlugins

/// A configuration with everything it refers to loaded and validated: what `check` and
/// `reload` validate and what a worker serves.
public struct LoadedGateway: Sendable {
    public let configPath: String
    public let config: GatewayConfig
    public let plugins: PluginSet
    /// Transformation chains, indexed like `config.routes`.
    public let chains: [TransformChain]
}

public enum GatewayLoader {
    /// Loads the config file and the plugin rule files it names; throws every issue found.
    public static func load(configPath: String) throws(ConfigErrors) -> LoadedGateway {
        let config = try ConfigLoader.load(path: configPath)
        var plugins = PluginSet.empty
        if let directory = config.pluginsDirectory {
            plugins = try PluginSet.load(directory: directory, defaultMaxBodyBytes: config.transform.maxBodyBytes)
        }
        let issues = plugins.validate(routeReferences: config.routes, configFile: configPath)
        if !issues.isEmpty { throw ConfigErrors(issues) }
        let chains: [TransformChain]
        do {
            chains = try plugins.chains(for: config.routes)
        } catch {
            throw ConfigErrors([ConfigIssue(file: configPath, pointer: "/routes", message: error.description)])
        }
        return LoadedGateway(configPath: configPath, config: config, plugins: plugins, chains: chains)
    }
}
