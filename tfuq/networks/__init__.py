"""Networks: U-Net, HighRes3DNet, MultiRes, pix2pix, UP-GAN, and building them from a config."""

from tfuq.networks.blocks import ChannelPad
from tfuq.networks.dropout import DropoutSpec
from tfuq.networks.factory import build_discriminators, build_model
from tfuq.networks.highres3dnet import HighRes3DNet
from tfuq.networks.multires import MultiRes
from tfuq.networks.outputs import head_params
from tfuq.networks.pix2pix import PatchDiscriminator, Pix2PixGenerator
from tfuq.networks.summary import summarize
from tfuq.networks.unet import UNet
from tfuq.networks.upgan import UPGAN, UncertaintyAttention, uncertainty_attention

__all__ = [
    "UPGAN",
    "ChannelPad",
    "DropoutSpec",
    "HighRes3DNet",
    "MultiRes",
    "PatchDiscriminator",
    "Pix2PixGenerator",
    "UNet",
    "UncertaintyAttention",
    "build_discriminators",
    "build_model",
    "head_params",
    "summarize",
    "uncertainty_attention",
]
