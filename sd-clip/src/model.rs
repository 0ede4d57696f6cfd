//! The CLIP text transformer (transformers' `CLIPTextModel`) over any [`Backend`].
//!
//! Token + position embeddings, then pre-LN encoder layers (`transformer.rs`, attending
//! causally), then a final layer norm. Field names follow the
//! checkpoint's (`text_model.encoder.layers.3.self_attn.q_proj.weight`), so the struct tree and
//! the safetensors index read alike.
//!
//! `clip_skip` counts as A1111 does: 1 is the last layer's output, N stops N − 1 layers before
//! the end; the final layer norm is applied either way. diffusers' `clip_skip = k` is this
//! `clip_skip = k + 1` (its `clip_skip=1` uses `hidden_states[-2]`, the penultimate layer).

use sd_core::nn::{Embedding, LayerNorm};
use sd_core::weights::Weights;
use sd_core::{Backend, Error, Result};

use crate::config::ClipTextConfig;
use crate::transformer::{EncoderLayer, LayerShape};

#[derive(Debug)]
struct Embeddings<B: Backend> {
    token_embedding: Embedding<B>,
    position_embedding: Embedding<B>,
}

/// transformers' `CLIPTextModel`: token ids to hidden states.
#[derive(Debug)]
pub struct ClipTextTransformer<B: Backend> {
    config: ClipTextConfig,
    embeddings: Embeddings<B>,
    layers: Vec<EncoderLayer<B>>,
    final_layer_norm: LayerNorm<B>,
}

impl<B: Backend> ClipTextTransformer<B> {
    /// Upload the weights under `text_model` (`weights` is the text encoder's root view, e.g.
    /// `store.text_encoder()?`). Every tensor is checked against the shape `config` implies.
    pub fn load(backend: &B, weights: &Weights<'_>, config: ClipTextConfig) -> Result<Self> {
        let activation = config.activation().ok_or_else(|| {
            Error::invalid_argument(
                "hidden_act",
                format!("unsupported activation {:?}", config.hidden_act),
            )
        })?;
        let w = weights.at("text_model");
        let dim = config.hidden_size;
        let embeddings = Embeddings {
            token_embedding: Embedding::load(
                backend,
                &w.at("embeddings.token_embedding"),
                config.vocab_size,
                dim,
            )?,
            position_embedding: Embedding::load(
                backend,
                &w.at("embeddings.position_embedding"),
                config.max_position_embeddings,
                dim,
            )?,
        };
        let shape = LayerShape {
            hidden: dim,
            intermediate: config.intermediate_size,
            heads: config.num_attention_heads,
            layer_norm_eps: config.layer_norm_eps as f32,
            activation,
            causal: true,
        };
        let layers = EncoderLayer::load_all(
            backend,
            &w.at("encoder.layers"),
            config.num_hidden_layers,
            &shape,
        )?;
        let final_layer_norm = LayerNorm::load(
            backend,
            &w.at("final_layer_norm"),
            dim,
            config.layer_norm_eps as f32,
        )?;
        Ok(ClipTextTransformer {
            config,
            embeddings,
            layers,
            final_layer_norm,
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// Hidden states `[batch, seq, hidden]` of `ids` (row-major `[batch, seq]`), after the
    /// final layer norm, taken `clip_skip − 1` layers before the end (1: the last layer, what
    /// `CLIPTextModel` calls `last_hidden_state`).
    pub fn forward(
        &self,
        backend: &B,
        ids: &[u32],
        batch: usize,
        clip_skip: usize,
    ) -> Result<B::Tensor> {
        self.forward_with_vectors(backend, ids, batch, clip_skip, &[])
    }

    /// [`forward`](Self::forward) where some positions take a given vector instead of their
    /// id's token embedding (textual inversion): `vectors` holds (index into `ids`, vector of
    /// `hidden_size` values). The position embedding is added to them as to any token.
    pub fn forward_with_vectors(
        &self,
        backend: &B,
        ids: &[u32],
        batch: usize,
        clip_skip: usize,
        vectors: &[(usize, ndarray::ArrayView1<'_, f32>)],
    ) -> Result<B::Tensor> {
        let layers = self.layers.len();
        if clip_skip == 0 || clip_skip > layers {
            return Err(Error::invalid_argument(
                "clip_skip",
                format!("{clip_skip} is outside 1..={layers} (1 uses the last layer)"),
            ));
        }
        if batch == 0 || ids.is_empty() || !ids.len().is_multiple_of(batch) {
            return Err(Error::invalid_argument(
                "ids",
                format!("{} ids do not split into {batch} equal rows", ids.len()),
            ));
        }
        let seq = ids.len() / batch;
        if seq > self.config.max_position_embeddings {
            return Err(Error::invalid_argument(
                "ids",
                format!(
                    "{seq} tokens per row, the model has {} positions",
                    self.config.max_position_embeddings
                ),
            ));
        }

        let mut tokens = self
            .embeddings
            .token_embedding
            .forward(backend, ids, &[batch, seq])?;
        if !vectors.is_empty() {
            let mut host = backend.download(&tokens)?;
            let dim = self.config.hidden_size;
            let mut rows = host
                .to_shape((ids.len(), dim))
                .map_err(|e| Error::shape("text embeddings", e.to_string()))?
                .into_owned();
            for (at, vector) in vectors {
                if *at >= ids.len() || vector.len() != dim {
                    return Err(Error::shape(
                        "text embeddings",
                        format!(
                            "a vector of {} values for position {at} of {} positions {dim} wide",
                            vector.len(),
                            ids.len()
                        ),
                    ));
                }
                rows.row_mut(*at).assign(vector);
            }
            host = rows
                .into_shape_with_order(vec![batch, seq, dim])
                .map_err(|e| Error::shape("text embeddings", e.to_string()))?;
            tokens = backend.upload(&host)?;
        }
        let positions: Vec<u32> = (0..seq as u32).collect();
        let positions =
            self.embeddings
                .position_embedding
                .forward(backend, &positions, &[1, seq])?;
        let mut x = backend.add(&tokens, &positions)?;
        for layer in &self.layers[..layers + 1 - clip_skip] {
            x = layer.forward(backend, &x)?;
        }
        self.final_layer_norm.forward(backend, &x)
    }

    /// The width of the hidden states.
    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    /// The number of encoder layers (the largest valid `clip_skip`).
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }
}
