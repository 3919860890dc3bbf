"""What every framework adapter needs: routing calls to a kernel, naming agents, patching class trees.

Each adapter translates its framework's types; everything that is the same
for all frameworks (how a syscall is built and sent, how a framework tool runs
under the tool manager, how methods are replaced on every class of a
hierarchy, including classes defined after patching) lives here once.
"""

from aios.adapters.shared.class_tree import ClassTreePatch
from aios.adapters.shared.names import InstanceNames, safe_agent_name, safe_tool_name
from aios.adapters.shared.route import Route, RouteOptions
from aios.adapters.shared.tool_routing import FrameworkTool, ToolRouter

__all__ = [
    "ClassTreePatch",
    "FrameworkTool",
    "InstanceNames",
    "Route",
    "RouteOptions",
    "ToolRouter",
    "safe_agent_name",
    "safe_tool_name",
]
