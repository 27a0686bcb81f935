"""Networks: the T2I U-Net, the temporal layers inflation adds, the STUNet, the text encoder."""
