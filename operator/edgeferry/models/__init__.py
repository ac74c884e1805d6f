"""Resource models: typed views of the ModelImage, EdgeTarget and ModelDeployment resources."""
