/**
 * The diffusers configs of the standard architectures a single-file checkpoint may hold. Single files carry no
 * configs; diffusers' `from_single_file` fetches them from the Hub repository `infer_diffusers_model_type` points
 * at (`DIFFUSERS_DEFAULT_PIPELINE_PATHS` in src/diffusers/loaders/single_file_utils.py, commit 58eb52c):
 *
 *   v1      -> stable-diffusion-v1-5/stable-diffusion-v1-5 (formerly runwayml/stable-diffusion-v1-5)
 *   v2      -> stabilityai/stable-diffusion-2-1 (the 768 v-prediction model; the 512 "base" model needs --config)
 *   xl_base -> stabilityai/stable-diffusion-xl-base-1.0
 *
 * The values below are the `config.json` files of those repositories (keys diffusers would fill with the same defaults
 * left out), cross-checked against diffusers' yaml-free builders (`create_unet_diffusers_config_from_ldm`,
 * `create_vae_diffusers_config_from_ldm`, `SCHEDULER_DEFAULT_CONFIG`) and tests/single_file/.
 */

type Json = Record<string, unknown>;

const SD_VAE: Json = {
  _class_name: "AutoencoderKL",
  act_fn: "silu",
  block_out_channels: [128, 256, 512, 512],
  down_block_types: ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  in_channels: 3,
  latent_channels: 4,
  layers_per_block: 2,
  norm_num_groups: 32,
  out_channels: 3,
  sample_size: 512,
  scaling_factor: 0.18215,
  up_block_types: ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
};

/** CLIP ViT-L/14's text tower (openai/clip-vit-large-patch14), as in SD-1.5's and SD-XL's text_encoder/config.json. */
const CLIP_L: Json = {
  architectures: ["CLIPTextModel"],
  attention_dropout: 0.0,
  bos_token_id: 0,
  dropout: 0.0,
  eos_token_id: 2,
  hidden_act: "quick_gelu",
  hidden_size: 768,
  initializer_factor: 1.0,
  initializer_range: 0.02,
  intermediate_size: 3072,
  layer_norm_eps: 1e-5,
  max_position_embeddings: 77,
  model_type: "clip_text_model",
  num_attention_heads: 12,
  num_hidden_layers: 12,
  pad_token_id: 1,
  projection_dim: 768,
  vocab_size: 49408,
};

const SCALED_LINEAR = { beta_end: 0.012, beta_schedule: "scaled_linear", beta_start: 0.00085, num_train_timesteps: 1000, trained_betas: null };

export interface StandardConfigs {
  model_index: Json;
  unet: Json;
  vae: Json;
  text_encoder: Json;
  text_encoder_2?: Json;
  scheduler: Json;
}

/** stable-diffusion-v1-5/stable-diffusion-v1-5. */
export const SD15: StandardConfigs = {
  model_index: {
    _class_name: "StableDiffusionPipeline",
    scheduler: ["diffusers", "PNDMScheduler"],
    text_encoder: ["transformers", "CLIPTextModel"],
    tokenizer: ["transformers", "CLIPTokenizer"],
    unet: ["diffusers", "UNet2DConditionModel"],
    vae: ["diffusers", "AutoencoderKL"],
    safety_checker: [null, null],
    feature_extractor: [null, null],
    requires_safety_checker: false,
  },
  unet: {
    _class_name: "UNet2DConditionModel",
    act_fn: "silu",
    attention_head_dim: 8,
    block_out_channels: [320, 640, 1280, 1280],
    center_input_sample: false,
    cross_attention_dim: 768,
    down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    downsample_padding: 1,
    flip_sin_to_cos: true,
    freq_shift: 0,
    in_channels: 4,
    layers_per_block: 2,
    mid_block_scale_factor: 1,
    norm_eps: 1e-5,
    norm_num_groups: 32,
    out_channels: 4,
    sample_size: 64,
    up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  },
  vae: SD_VAE,
  text_encoder: CLIP_L,
  scheduler: {
    _class_name: "PNDMScheduler",
    ...SCALED_LINEAR,
    clip_sample: false,
    set_alpha_to_one: false,
    skip_prk_steps: true,
    steps_offset: 1,
  },
};

/**
 * stabilityai/stable-diffusion-2-1 (768x768, v-prediction). diffusers' legacy scheduler loader picks epsilon only
 * when the checkpoint's `global_step` is 875000 (the 512 base model); safetensors files carry no global_step, and
 * the modern `from_single_file` takes this repository's scheduler config, so v_prediction it is.
 * OpenCLIP ViT-H/14 has 24 layers; diffusers drops the last (SD-2 uses the penultimate layer) and reads 23.
 */
export const SD21: StandardConfigs = {
  model_index: {
    _class_name: "StableDiffusionPipeline",
    scheduler: ["diffusers", "DDIMScheduler"],
    text_encoder: ["transformers", "CLIPTextModel"],
    tokenizer: ["transformers", "CLIPTokenizer"],
    unet: ["diffusers", "UNet2DConditionModel"],
    vae: ["diffusers", "AutoencoderKL"],
    safety_checker: [null, null],
    feature_extractor: [null, null],
    requires_safety_checker: false,
  },
  unet: {
    _class_name: "UNet2DConditionModel",
    act_fn: "silu",
    attention_head_dim: [5, 10, 20, 20],
    block_out_channels: [320, 640, 1280, 1280],
    center_input_sample: false,
    cross_attention_dim: 1024,
    down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    downsample_padding: 1,
    dual_cross_attention: false,
    flip_sin_to_cos: true,
    freq_shift: 0,
    in_channels: 4,
    layers_per_block: 2,
    mid_block_scale_factor: 1,
    norm_eps: 1e-5,
    norm_num_groups: 32,
    num_class_embeds: null,
    only_cross_attention: false,
    out_channels: 4,
    sample_size: 96,
    up_block_types: ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    upcast_attention: true,
    use_linear_projection: true,
  },
  vae: { ...SD_VAE, sample_size: 768 },
  text_encoder: {
    architectures: ["CLIPTextModel"],
    attention_dropout: 0.0,
    bos_token_id: 0,
    dropout: 0.0,
    eos_token_id: 2,
    hidden_act: "gelu",
    hidden_size: 1024,
    initializer_factor: 1.0,
    initializer_range: 0.02,
    intermediate_size: 4096,
    layer_norm_eps: 1e-5,
    max_position_embeddings: 77,
    model_type: "clip_text_model",
    num_attention_heads: 16,
    num_hidden_layers: 23,
    pad_token_id: 1,
    projection_dim: 512,
    vocab_size: 49408,
  },
  scheduler: {
    _class_name: "DDIMScheduler",
    ...SCALED_LINEAR,
    clip_sample: false,
    prediction_type: "v_prediction",
    set_alpha_to_one: false,
    skip_prk_steps: true,
    steps_offset: 1,
  },
};

/** stabilityai/stable-diffusion-xl-base-1.0. */
export const SDXL_BASE: StandardConfigs = {
  model_index: {
    _class_name: "StableDiffusionXLPipeline",
    force_zeros_for_empty_prompt: true,
    scheduler: ["diffusers", "EulerDiscreteScheduler"],
    text_encoder: ["transformers", "CLIPTextModel"],
    text_encoder_2: ["transformers", "CLIPTextModelWithProjection"],
    tokenizer: ["transformers", "CLIPTokenizer"],
    tokenizer_2: ["transformers", "CLIPTokenizer"],
    unet: ["diffusers", "UNet2DConditionModel"],
    vae: ["diffusers", "AutoencoderKL"],
  },
  unet: {
    _class_name: "UNet2DConditionModel",
    act_fn: "silu",
    addition_embed_type: "text_time",
    addition_embed_type_num_heads: 64,
    addition_time_embed_dim: 256,
    attention_head_dim: [5, 10, 20],
    block_out_channels: [320, 640, 1280],
    center_input_sample: false,
    class_embed_type: null,
    class_embeddings_concat: false,
    conv_in_kernel: 3,
    conv_out_kernel: 3,
    cross_attention_dim: 2048,
    cross_attention_norm: null,
    down_block_types: ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    downsample_padding: 1,
    dual_cross_attention: false,
    encoder_hid_dim: null,
    encoder_hid_dim_type: null,
    flip_sin_to_cos: true,
    freq_shift: 0,
    in_channels: 4,
    layers_per_block: 2,
    mid_block_only_cross_attention: null,
    mid_block_scale_factor: 1,
    mid_block_type: "UNetMidBlock2DCrossAttn",
    norm_eps: 1e-5,
    norm_num_groups: 32,
    num_attention_heads: null,
    num_class_embeds: null,
    only_cross_attention: false,
    out_channels: 4,
    projection_class_embeddings_input_dim: 2816,
    resnet_out_scale_factor: 1.0,
    resnet_skip_time_act: false,
    resnet_time_scale_shift: "default",
    sample_size: 128,
    time_cond_proj_dim: null,
    time_embedding_act_fn: null,
    time_embedding_dim: null,
    time_embedding_type: "positional",
    timestep_post_act: null,
    transformer_layers_per_block: [1, 2, 10],
    up_block_types: ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    upcast_attention: false,
    use_linear_projection: true,
  },
  vae: { ...SD_VAE, force_upcast: true, sample_size: 1024, scaling_factor: 0.13025 },
  text_encoder: CLIP_L,
  /** OpenCLIP ViT-bigG/14 (laion/CLIP-ViT-bigG-14-laion2B-39B-b160k), all 32 layers, with its projection. */
  text_encoder_2: {
    architectures: ["CLIPTextModelWithProjection"],
    attention_dropout: 0.0,
    bos_token_id: 0,
    dropout: 0.0,
    eos_token_id: 2,
    hidden_act: "gelu",
    hidden_size: 1280,
    initializer_factor: 1.0,
    initializer_range: 0.02,
    intermediate_size: 5120,
    layer_norm_eps: 1e-5,
    max_position_embeddings: 77,
    model_type: "clip_text_model",
    num_attention_heads: 20,
    num_hidden_layers: 32,
    pad_token_id: 1,
    projection_dim: 1280,
    vocab_size: 49408,
  },
  scheduler: {
    _class_name: "EulerDiscreteScheduler",
    ...SCALED_LINEAR,
    clip_sample: false,
    interpolation_type: "linear",
    prediction_type: "epsilon",
    sample_max_value: 1.0,
    set_alpha_to_one: false,
    skip_prk_steps: true,
    steps_offset: 1,
    timestep_spacing: "leading",
    use_karras_sigmas: false,
  },
};
