"""The edge agent: turns a deployment manifest into running modules and keeps them so.

``plan`` (pure) decides, ``Runner`` executes through a ``ContainerRuntime``, the
reconciler repeats both from fresh state until the device matches the deployment.
"""
