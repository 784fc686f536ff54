# What this Mac is. Pure data; put this directory at hosts/<name>/.
{
  system = "aarch64-darwin";
  class = "darwin";
  role = "what it is for";
}
